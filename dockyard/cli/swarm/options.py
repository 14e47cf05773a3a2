"""Docker's option syntax, parsed: durations, sizes, CPUs, `--publish`, `--env`,
`--constraint`, `service scale NAME=N`. Pure; errors are ValueError with Docker's wording so
the commands can show them as bad parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from dockyard.cli.swarm.spec import PortConfig

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "500ms", "0"): seconds."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    if not s or s.startswith("-"):
        raise ValueError(f'invalid duration "{text}"' + (": must not be negative"
                                                         if s.startswith("-") else ""))
    s = s.removeprefix("+")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}" (a number and a unit: '
                             "ns, us, ms, s, m, h; for example 10s or 1m30s)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Go's Duration.String(): 0s, 500ms, 1.5s, 1m30s, 1h0m0s."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{_trim(ns / 1e3)}µs"
    if ns < 1_000_000_000:
        return f"{_trim(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = f"{_trim(rest / 1e9)}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def parse_memory(text: str) -> int:
    """Docker's RAMInBytes: "64M", "64MiB", "1g", "512k", "1048576" (binary units)."""
    m = _RAM.match(text.strip())
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    unit = (m.group(2) or "").lower()
    factor = 1024 ** ("kmgtp".index(unit) + 1) if unit else 1
    return int(float(m.group(1)) * factor)


def format_memory(size: int) -> str:
    """Docker's BytesSize (binary units with 4 significant digits): 64MiB, 1.5GiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value, i = float(size), 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.4g}{units[i]}"


def parse_cpus(text: str) -> int:
    """Docker's NanoCPUs ("0.5" → 500000000)."""
    try:
        nano = Fraction(text.strip()) * 1_000_000_000
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {text} as a rational number") from None
    if nano.denominator != 1:
        raise ValueError("value is too precise")
    if nano < 0:
        raise ValueError(f"invalid CPU value {text}: must not be negative")
    return int(nano)


def format_cpus(nano: int) -> str:
    return f"{nano / 1e9:g}"


def parse_publish(text: str) -> PortConfig:
    """`8080:80`, `8080:80/udp`, `80` (the cluster picks the published port), or the long
    form `published=8080,target=80,protocol=tcp,mode=ingress`."""
    if "=" in text:
        return _parse_publish_long(text)
    ports, _, protocol = text.partition("/")
    protocol = (protocol or "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol '{protocol}' for {text}")
    published, sep, target = ports.rpartition(":")
    if ":" in published:  # ip:published:target
        raise ValueError(f"hostip is not supported: {text}")
    return PortConfig(target=_port(target, text),
                      published=_port(published, text) if sep else None, protocol=protocol)


def _parse_publish_long(text: str) -> PortConfig:
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid field '{item}' must be a key=value pair")
        values[key.strip().lower()] = value.strip()
    unknown = set(values) - {"published", "target", "protocol", "mode"}
    if unknown:
        raise ValueError(f"invalid field key {sorted(unknown)[0]}")
    if values.get("mode", "ingress") != "ingress":
        raise ValueError("publish mode 'host' is not supported: services publish through "
                         "the cluster's NodePorts (ingress mode)")
    if "target" not in values:
        raise ValueError("missing mandatory field \"target\"")
    protocol = values.get("protocol", "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol value '{protocol}'")
    published = values.get("published")
    return PortConfig(target=_port(values["target"], text),
                      published=_port(published, text) if published else None,
                      protocol=protocol)


def _port(value: str, text: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"invalid port '{value}' in '{text}': a number from 1 to 65535")
    return int(value)


def format_port(port: PortConfig, published: int | None = None) -> str:
    """As `docker service ls` prints one: *:8080->80/tcp."""
    shown = published if published is not None else port.published
    return f"*:{shown if shown else ''}->{port.target}/{port.protocol}"


def parse_env(item: str, environ: Mapping[str, str]) -> str | None:
    """K=V as given; a bare K takes the client's value (dropped when unset), as Docker."""
    key, sep, _ = item.partition("=")
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"invalid environment variable: {item}")
    if sep:
        return item
    return f"{key}={environ[key]}" if key in environ else None


def env_key(item: str) -> str:
    return item.partition("=")[0]


@dataclass(frozen=True)
class Constraint:
    """`node.labels.x==y`: key (node.labels.x), op (== or !=), value."""

    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


_CONSTRAINT = re.compile(r"^\s*([\w.\-/]+?)\s*(==|!=)\s*(.+?)\s*$")
CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os",
                   "node.platform.arch")


def parse_constraint(text: str) -> Constraint:
    m = _CONSTRAINT.match(text)
    if not m:
        raise ValueError(f"constraint expected one operator from ==, !=: {text}")
    key, op, value = m.groups()
    if key.startswith("engine.labels."):
        raise ValueError(f"{text}: engine labels are not supported (there is no Docker "
                         "engine); use node labels: `dockyard node update --label-add`")
    if not (key in CONSTRAINT_KEYS or (key.startswith("node.labels.")
                                       and len(key) > len("node.labels."))):
        raise ValueError(f"{text}: unknown constraint key {key}; use one of "
                         f"{', '.join(CONSTRAINT_KEYS)} or node.labels.<label>")
    if key == "node.role" and value not in ("manager", "worker"):
        raise ValueError(f"{text}: node.role is manager or worker")
    return Constraint(key, op, value)


def parse_scale(text: str) -> tuple[str, int]:
    """`web=5` → ("web", 5)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"invalid scale specifier '{text}': expected SERVICE=REPLICAS")
    if not value.isdigit():
        raise ValueError(f"invalid replicas value {value}: must be a non-negative number")
    return name, int(value)


def parse_label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise ValueError(f"invalid label '{text}': expected key=value")
    return key, value
