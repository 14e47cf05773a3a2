"""Per-key exponential back-off, client-go's flowcontrol.Backoff as the kubelet uses it.

Crash loops and image pulls wait `initial`, then twice as long each time, up to `maximum`.
An entry is forgotten once its key had no failure for `reset_after` seconds (Kubernetes:
2 x max = 10 minutes), so a container that ran for ten minutes before crashing starts again
at the initial delay. Times are wall-clock seconds (the runtime reports exits as epoch times).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    backoff: float
    last_update: float


class Backoff:
    def __init__(self, initial: float, maximum: float, *, reset_after: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = 2 * maximum if reset_after is None else reset_after
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def _expired(self, event_time: float, entry: _Entry) -> bool:
        return event_time - entry.last_update > self.reset_after

    def get(self, key: str) -> float:
        """The current delay of `key` (0 when it has none)."""
        entry = self._entries.get(key)
        return entry.backoff if entry else 0.0

    def next(self, key: str, event_time: float) -> None:
        """Record a retry caused by an event (an exit) at `event_time`: the delay doubles."""
        entry = self._entries.get(key)
        if entry is None or self._expired(event_time, entry):
            entry = self._entries[key] = _Entry(self.initial, 0.0)
        else:
            entry.backoff = min(entry.backoff * 2, self.maximum)
        entry.last_update = self.clock()

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        """Whether a retry for an event at `event_time` must still wait."""
        entry = self._entries.get(key)
        if entry is None or self._expired(event_time, entry):
            return False
        return self.clock() - event_time < entry.backoff

    def in_backoff_since_update(self, key: str, event_time: float) -> bool:
        """Whether `event_time` is within the delay counted from the last `next` (image pulls)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(event_time, entry):
            return False
        return event_time - entry.last_update < entry.backoff

    def remaining(self, key: str, since: float) -> float:
        """Seconds until the delay counted from `since` ends (0 if it has)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, since + entry.backoff - self.clock())

    def until_update_expires(self, key: str) -> float:
        """Seconds until the delay counted from the last `next` ends (0 if it has)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.last_update + entry.backoff - self.clock())

    def forget_prefix(self, prefix: str) -> None:
        """Drop every key starting with `prefix` (all keys of a pod that is gone)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def gc(self) -> None:
        """Drop the entries that expired (client-go's Backoff.GC)."""
        now = self.clock()
        for key in [k for k, e in self._entries.items() if self._expired(now, e)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (`10s`, `2m40s`, `50ms`), so messages read
    exactly like Kubernetes' (`back-off 10s restarting failed container=...`)."""
    if seconds <= 0:
        return "0s"
    ns = round(seconds * 1e9)
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(ns / 1_000) + "µs"
    if ns < 1_000_000_000:
        return _trim(ns / 1_000_000) + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + _trim(rest / 1e9) + "s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"
