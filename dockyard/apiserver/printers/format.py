"""Cell formatting shared by the printers, ported from Kubernetes' Go helpers.

Each function names the Go function it mirrors (apimachinery `duration.HumanDuration`,
`labels.FormatLabels`, `metav1.FormatLabelSelector`...) so a cell reads exactly as kubectl shows
it against a real apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

UNKNOWN = "<unknown>"
NONE = "<none>"

_MICROSECOND = timedelta(microseconds=1)
_FRACTION = re.compile(r"(\.\d{6})\d+")


def get(obj: Mapping[str, Any] | None, *path: str, default: Any = None) -> Any:
    """`obj[p0][p1]...`, or `default` when any step is missing or null."""
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return default
        cur = cur.get(key)
        if cur is None:
            return default
    return cur


def parse_time(value: Any) -> datetime | None:
    """An RFC3339 (Time) or RFC3339Micro (MicroTime) string as an aware datetime; None if unset.

    Go's zero time (`0001-01-01T00:00:00Z`) counts as unset, as `metav1.Time.IsZero` does.
    """
    if not value or not isinstance(value, str):
        return None
    try:
        # Nanosecond fractions are legal RFC3339 but beyond datetime's precision.
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year == 1 and parsed.replace(tzinfo=None) == datetime(1, 1, 1):
        return None
    return parsed


def _trunc_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, like Go's `/` and `int(float)`."""
    q = abs(a) // b
    return q if a >= 0 else -q


def human_duration(d: timedelta) -> str:
    """`duration.HumanDuration`: ~2-3 significant figures ("45s", "3m2s", "5h10m", "2y30d")."""
    micros = d // _MICROSECOND
    seconds = _trunc_div(micros, 1_000_000)
    # Up to 1s in the future is tolerated as clock skew and shown as "0s".
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: Any, now: datetime) -> str:
    """`translateTimestampSince`: the age of an RFC3339 timestamp, "<unknown>" when unset."""
    when = value if isinstance(value, datetime) else parse_time(value)
    if when is None:
        return UNKNOWN
    return human_duration(now - when)


def format_labels(labels: Mapping[str, str] | None) -> str:
    """`labels.FormatLabels`: "k=v,k2=v2" sorted by key, "<none>" when empty."""
    if not labels:
        return NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _requirement(expr: Mapping[str, Any]) -> tuple[str, str]:
    key = expr.get("key") or ""
    op = expr.get("operator")
    values = list(expr.get("values") or [])
    if op in ("In", "NotIn"):
        if not values:
            raise ValueError(f"{op} requires values")
        word = "in" if op == "In" else "notin"
        # Requirement.String sorts multi-value sets on output.
        shown = values[0] if len(values) == 1 else ",".join(sorted(values))
        return key, f"{key} {word} ({shown})"
    if op in ("Exists", "DoesNotExist"):
        if values:
            raise ValueError(f"{op} takes no values")
        return key, key if op == "Exists" else f"!{key}"
    raise ValueError(f"{op!r} is not a valid label selector operator")


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """`metav1.LabelSelectorAsSelector(s).String()`; raises ValueError on an invalid selector.

    A nil selector selects nothing and an empty one everything; both print as "".
    """
    if selector is None:
        return ""
    reqs = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    reqs += [_requirement(e) for e in selector.get("matchExpressions") or []]
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """`metav1.FormatLabelSelector`: like `selector_string` but "<none>"/"<error>"."""
    try:
        text = selector_string(selector)
    except ValueError:
        return "<error>"
    return text or NONE


def layout_containers(containers: Iterable[Mapping[str, Any]] | None) -> tuple[str, str]:
    """`layoutContainerCells`: comma-joined container names and images."""
    items = list(containers or [])
    names = ",".join(c.get("name") or "" for c in items)
    images = ",".join(c.get("image") or "" for c in items)
    return names, images


def list_with_more(items: list[str], count: int, limit: int = 3, empty: str = "<unset>") -> str:
    """`listWithMoreString`: the first `limit` items then " + N more...".

    `items` holds at most `limit` entries; `count` is how many there were in all.
    """
    text = ",".join(items)
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def join_host_port(host: str, port: Any) -> str:
    """`net.JoinHostPort`: brackets IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
