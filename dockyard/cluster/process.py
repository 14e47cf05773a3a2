"""Processes that outlive the command that started them, found again by pid.

`cluster up` exits while the servers, agents and etcd members keep running; `cluster down`
(another process) ends them. A pid alone could name a different process by then, so each is
recorded with its start time (field 22 of /proc/PID/stat, fixed for a process's life, kept
across exec), and a pid is only signalled while that start time still matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


@dataclass
class Proc:
    """One detached process: what it is for, its pid and start time, its log."""

    name: str
    pid: int
    start_time: int
    log: str

    @property
    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.start_time and stat[0] not in ("Z", "X")

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Proc:
        return cls(**data)


def start_detached(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None
                   ) -> Proc:
    """Start `argv` in its own session (no terminal signals from the caller reach it), output
    appended to `log`, stdin from /dev/null."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env)
    stat = _stat(popen.pid)
    # Forget the Popen object so that its destructor never waits on (or warns about) it.
    popen.returncode = 0
    return Proc(name, popen.pid, stat[1] if stat else 0, str(log))


def reap(procs: list[Proc]) -> None:
    """Collect those of `procs` that are our own exited children (started by this command),
    and only those: other children belong to whoever started them."""
    for proc in procs:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)


def stop(procs: list[Proc], timeout: float = 15.0) -> list[Proc]:
    """SIGTERM each live process, SIGKILL whatever is left after `timeout`; return the ones
    that would not die (expected: none)."""
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(procs)
        if not any(p.alive for p in procs):
            return []
        time.sleep(0.05)
    for proc in procs:
        proc.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reap(procs)
        if not any(p.alive for p in procs):
            return []
        time.sleep(0.05)
    return [p for p in procs if p.alive]


def log_tail(proc: Proc, size: int = 3000) -> str:
    try:
        return Path(proc.log).read_text(errors="replace")[-size:]
    except OSError:
        return ""
