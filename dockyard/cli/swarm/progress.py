"""Swarm's convergence display: lines keyed by an ID (`overall progress`, `1/2`, `verify`)
that are rewritten in place on a terminal and printed once per change otherwise.

    overall progress: 2 out of 2 tasks
    1/2: running   [==================================================>]
    2/2: running   [==================================================>]
    verify: Service converged
"""

from __future__ import annotations

from typing import TextIO

from dockyard.cli.swarm.tasks import PROGRESS_STATES, progress_position

BAR_WIDTH = 50
STATE_WIDTH = max(len(s) for s in PROGRESS_STATES)  # "preparing"


def bar(current: int, total: int) -> str:
    """Docker's jsonmessage progress bar."""
    if total <= 0 or current <= 0:
        return ""
    filled = min(BAR_WIDTH, int(current / total * 100) // 2)
    return f"[{'=' * filled}>{' ' * (BAR_WIDTH - filled)}]"


def task_text(state: str, *, with_bar: bool) -> str:
    """`running   [=====>   ]` for one task (no bar for states past running)."""
    position = progress_position(state)
    shown = f"{state:<{STATE_WIDTH}}"
    if with_bar and position:
        return f"{shown} {bar(position, len(PROGRESS_STATES))}"
    return shown.rstrip()


class ProgressView:
    """Ordered `id: text` lines on `out`; a TTY gets them redrawn in place."""

    def __init__(self, out: TextIO, *, tty: bool, width: int = 80) -> None:
        self.out = out
        self.tty = tty
        self.with_bar = tty and width >= 80
        self._ids: list[str] = []
        self._text: dict[str, str] = {}

    def set(self, key: str, text: str) -> None:
        if self._text.get(key) == text:
            return
        if not self.tty:
            self._text[key] = text
            self.out.write(f"{key}: {text}\n")
            self.out.flush()
            return
        if key not in self._text:
            self._ids.append(key)
            self._text[key] = text
            self.out.write(f"{key}: {text}\n")
        else:
            self._text[key] = text
            up = len(self._ids) - self._ids.index(key)
            self.out.write(f"\x1b[{up}A\r\x1b[2K{key}: {text}\r\x1b[{up}B")
        self.out.flush()

    def task(self, key: str, state: str) -> None:
        self.set(key, task_text(state, with_bar=self.with_bar))
