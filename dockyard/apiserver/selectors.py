"""Label and field selectors: parse the query-string forms once, then match objects.

Label selectors support Kubernetes' equality (`a=b`, `a==b`, `a!=b`) and set-based (`a in (x,y)`,
`a notin (x)`, `a`, `!a`) requirements; field selectors support `=`, `==` and `!=` on the
fields a kind declares. A bad selector is a 400 naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.apiserver.errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # "!=", "notin"


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse `app=web,tier in (a,b),!legacy` into requirements (all must hold)."""
    tokens = [t for t in _TOKEN.findall(text)]
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise bad_request(f"unable to parse requirement: found '', expected: identifier "
                              f"in label selector {text!r}")
        i += 1
        return tokens[i - 1]

    while i < len(tokens):
        tok = take()
        if tok == "!":
            reqs.append(Requirement(take(), "!"))
        else:
            key = tok
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                take()
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    take()
                reqs.append(Requirement(key, "!=" if nxt == "!=" else "=", frozenset([value])))
            elif nxt in ("in", "notin"):
                take()
                if take() != "(":
                    raise bad_request(f"unable to parse requirement: expected '(' after {nxt} "
                                      f"in label selector {text!r}")
                values: set[str] = set()
                while (tok := take()) != ")":
                    if tok != ",":
                        values.add(tok)
                reqs.append(Requirement(key, nxt, frozenset(values)))
            else:
                raise bad_request(f"unable to parse requirement: unexpected {nxt!r} in label "
                                  f"selector {text!r}")
        if i < len(tokens):
            if take() != ",":
                raise bad_request(f"unable to parse label selector {text!r}: expected ','")
    for req in reqs:
        _check_label_key(req.key, text)
    return reqs


def _check_label_key(key: str, text: str) -> None:
    if not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in "
                          f"selector {text!r}")


def from_label_selector_object(selector: dict[str, Any]) -> list[Requirement]:
    """A `metav1.LabelSelector` (matchLabels / matchExpressions) as requirements."""
    reqs = [Requirement(k, "=", frozenset([v])) for k, v in
            (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]],
                                frozenset(expr.get("values") or [])))
    return reqs


def label_matcher(text: str | None) -> Matcher | None:
    if not text:
        return None
    reqs = parse_label_selector(text)

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in reqs)

    return match


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string form of a field for selector matching ("" when unset)."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # e.g. Event.source: component is what selectors mean
        return str(value.get("component", ""))
    return str(value)


def field_matcher(text: str | None, allowed: tuple[str, ...], kind: str) -> Matcher | None:
    if not text:
        return None
    terms: list[tuple[str, bool, str]] = []
    for term in text.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r"([^!=]+?)\s*(!=|==|=)\s*(.*)", term)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace", *allowed):
            raise bad_request(f'field label not supported: {path}')
        terms.append((path, op == "!=", value))

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, p) == v) != neg for p, neg, v in terms)

    return match


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(m(obj) for m in active)
