"""Label and node selectors as the scheduler evaluates them (apimachinery `labels.Selector`,
component-helpers `nodeaffinity`).

Selectors are compiled once per pod into small closures; matching a node or a pod is then a few
dict lookups, which is what the filter loop over thousands of nodes needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Labels = dict[str, str]
Matcher = Callable[[Labels], bool]


def _match_nothing(_labels: Labels) -> bool:
    return False


def _match_everything(_labels: Labels) -> bool:
    return True


def _requirement(key: str, op: str, values: list[str]) -> Matcher:
    """One `key op values` test; unknown operators match nothing (the API validates them)."""
    wanted = frozenset(values)
    if op == "In":
        return lambda labels: labels.get(key) in wanted
    if op == "NotIn":
        return lambda labels: labels.get(key) not in wanted
    if op == "Exists":
        return lambda labels: key in labels
    if op == "DoesNotExist":
        return lambda labels: key not in labels
    if op in ("Gt", "Lt") and len(values) == 1:
        try:
            bound = int(values[0])
        except ValueError:
            return _match_nothing
        greater = op == "Gt"

        def compare(labels: Labels) -> bool:
            raw = labels.get(key)
            if raw is None:
                return False
            try:
                value = int(raw)
            except ValueError:
                return False
            return value > bound if greater else value < bound
        return compare
    return _match_nothing


def _all_of(tests: list[Matcher]) -> Matcher:
    if not tests:
        return _match_everything
    if len(tests) == 1:
        return tests[0]
    return lambda labels: all(t(labels) for t in tests)


def label_selector(selector: dict[str, Any] | None) -> Matcher:
    """metav1.LabelSelector: a nil selector matches nothing, an empty one everything."""
    if selector is None:
        return _match_nothing
    tests: list[Matcher] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
    for expr in selector.get("matchExpressions") or []:
        tests.append(_requirement(expr.get("key", ""), expr.get("operator", ""),
                                  list(expr.get("values") or [])))
    return _all_of(tests)


def node_selector_term(term: dict[str, Any]) -> Callable[[Labels, str], bool]:
    """One NodeSelectorTerm (expressions on labels AND fields on metadata.name).

    A term with no requirements matches no node, as in Kubernetes.
    """
    exprs = [_requirement(e.get("key", ""), e.get("operator", ""), list(e.get("values") or []))
             for e in term.get("matchExpressions") or []]
    fields = [_requirement(e.get("key", ""), e.get("operator", ""), list(e.get("values") or []))
              for e in term.get("matchFields") or []]
    if not exprs and not fields:
        return lambda _labels, _name: False
    labels_ok = _all_of(exprs)
    if not fields:
        return lambda labels, _name: labels_ok(labels)
    fields_ok = _all_of(fields)
    return lambda labels, name: labels_ok(labels) and fields_ok({"metadata.name": name})


def node_selector(selector: dict[str, Any]) -> Callable[[Labels, str], bool]:
    """A NodeSelector: its terms are ORed."""
    terms = [node_selector_term(t) for t in selector.get("nodeSelectorTerms") or []]
    return lambda labels, name: any(t(labels, name) for t in terms)


