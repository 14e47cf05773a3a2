"""Container logs as `kubectl logs` shows them, read from the runtime's CRI-format files.

The shim writes records `<RFC3339Nano> <stdout|stderr> <F|P> <content>` to `<path>` and rotates
by renaming `<path>` → `<path>.1` → `<path>.2` ..., so the oldest file has the highest number.
`read_logs` reads them oldest first and applies the options in the kubelet's order: tailLines
picks where to start (counted in lines as the user sees them: partial `P` records belong to the
line their `F` record ends), sinceTime then skips older records, timestamps prefix each record,
limitBytes cuts the output. With `follow` it keeps reading the current file, woken by inotify
(one shared instance per event loop, no thread per reader), follows rotations, and ends once
the container has exited and its file is drained.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import ctypes
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
POLL_SECONDS = 0.1  # only when inotify is not available


@dataclass(frozen=True)
class LogOptions:
    """Kubernetes' PodLogOptions, already validated and resolved by the server."""

    follow: bool = False
    tail_lines: int | None = None  # None: everything
    since_ns: int | None = None  # epoch nanoseconds; older records are skipped
    timestamps: bool = False
    limit_bytes: int | None = None


@dataclass(frozen=True)
class Record:
    time_ns: int
    stream: str  # "stdout" | "stderr"
    partial: bool  # tag P: the line continues in the next record
    content: bytes


_STAMP = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(text: bytes) -> int | None:
    """RFC 3339 with up to nanoseconds (Go's RFC3339Nano) → epoch nanoseconds."""
    m = _STAMP.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = m.group(8)
    if zone != b"Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[:1] == b"+" else -offset
    fraction = (m.group(7) or b"").ljust(9, b"0")
    return seconds * 1_000_000_000 + int(fraction)


def format_timestamp(ns: int) -> bytes:
    """Go's RFC3339NanoFixed in UTC, as the kubelet prints `--timestamps`."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z").encode()


def parse_record(line: bytes) -> Record | None:
    """One line of a CRI log file (without its newline); None when it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    stamp = parse_timestamp(parts[0])
    if stamp is None:
        return None
    return Record(stamp, parts[1].decode(), parts[2] == b"P",
                  parts[3] if len(parts) == 4 else b"")


def log_files(path: Path) -> list[Path]:
    """`path` and its rotated predecessors, oldest first (`path.3`, `path.2`, `path.1`, `path`)."""
    rotated: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        prefix = path.name + "."
        for entry in path.parent.iterdir():
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit():
                rotated.append((int(suffix), entry))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        files.append(path)
    return files


# -- tail: where the last N lines start, found from the end without reading everything ------

def _complete_end(f: BinaryIO) -> int:
    """Offset just after the last newline (an unterminated tail is a record being written)."""
    pos = f.seek(0, os.SEEK_END)
    while pos > 0:
        n = min(CHUNK, pos)
        pos -= n
        f.seek(pos)
        i = f.read(n).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _lines_backward(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(start offset, line without newline) of each complete line, last first."""
    pos = limit = _complete_end(f)
    buf, hi = b"", 0  # buf[:hi] holds the bytes from `pos` up to the last line yielded
    while limit > 0:
        i = buf.rfind(b"\n", 0, hi - 1) if hi > 0 else -1
        if i < 0 and pos > 0:
            n = min(CHUNK, pos)
            pos -= n
            f.seek(pos)
            buf = f.read(n) + buf[:hi]
            hi = len(buf)
            continue
        start = pos + i + 1
        yield start, buf[i + 1:hi - 1]
        hi, limit = i + 1, start


def _tail_start(files: list[Path], lines: int) -> tuple[int, int]:
    """(file index, offset) where the last `lines` lines begin."""
    if not files:
        return 0, 0
    if lines == 0:
        with open(files[-1], "rb") as f:
            return len(files) - 1, _complete_end(f)
    count, newest = 0, True
    for index in range(len(files) - 1, -1, -1):
        try:
            f = open(files[index], "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue
        with f:
            for start, line in _lines_backward(f):
                record = parse_record(line)
                if record is None:
                    continue
                if newest:
                    newest = False
                    if record.partial:  # the last line is still being written: it counts
                        count = 1
                        continue
                if not record.partial:  # an F record ends a line; what follows starts one
                    if count == lines:
                        return index, start + len(line) + 1
                    count += 1
    return 0, 0


# -- rendering -----------------------------------------------------------------------------

class _Render:
    """Records → the bytes the user sees, with since, timestamps and limitBytes applied."""

    def __init__(self, opts: LogOptions) -> None:
        self.since = opts.since_ns
        self.timestamps = opts.timestamps
        self.left = opts.limit_bytes

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0

    def lines(self, lines: list[bytes]) -> bytes:
        parts: list[bytes] = []
        for line in lines:
            record = parse_record(line)
            if record is None or (self.since is not None and record.time_ns < self.since):
                continue
            if self.timestamps:
                parts.append(format_timestamp(record.time_ns) + b" ")
            parts.append(record.content if record.partial else record.content + b"\n")
        out = b"".join(parts)
        if self.left is not None:
            out = out[:self.left]
            self.left -= len(out)
        return out


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines, and the unterminated rest."""
    lines = data.split(b"\n")
    return lines[:-1], lines[-1]


# -- inotify, shared ------------------------------------------------------------------------

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE = (
    0x2, 0x8, 0x40, 0x80, 0x100)
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("iIII")


class _DirWatcher:
    """One inotify instance per event loop. Readers watch a directory, remember its change
    counter before reading, and wait for it to move: no wake-up is lost between a read that
    found nothing and the wait."""

    _libc: ctypes.CDLL | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fd = -1
        self.refs: dict[int, int] = {}
        self.counters: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Event] = {}
        try:
            if _DirWatcher._libc is None:
                _DirWatcher._libc = ctypes.CDLL(None, use_errno=True)
            self.fd = _DirWatcher._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            self.fd = -1
        if self.fd >= 0:
            loop.add_reader(self.fd, self._readable)

    def watch(self, directory: Path) -> int:
        """A watch descriptor, or -1 (then `wait` polls)."""
        if self.fd < 0 or self._libc is None:
            return -1
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK)
        if wd < 0:
            return -1
        self.refs[wd] = self.refs.get(wd, 0) + 1
        self.counters.setdefault(wd, 0)
        return wd

    def unwatch(self, wd: int) -> bool:
        """Drop one reference; True when the watcher has no watches left."""
        if wd >= 0:
            self.refs[wd] -= 1
            if self.refs[wd] == 0:
                del self.refs[wd]
                self.counters.pop(wd, None)
                self.waiters.pop(wd, None)
                if self._libc is not None:
                    self._libc.inotify_rm_watch(self.fd, wd)
        return not self.refs

    def counter(self, wd: int) -> int:
        return self.counters.get(wd, 0)

    async def wait(self, wd: int, seen: int, timeout: float) -> None:
        """Until the directory changed after `seen` was read, or `timeout`."""
        if wd < 0:
            await asyncio.sleep(min(timeout, POLL_SECONDS))
            return
        if self.counters.get(wd, 0) != seen:
            return
        event = self.waiters.setdefault(wd, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if wd in self.counters:
                self.counters[wd] += 1
                event = self.waiters.pop(wd, None)
                if event is not None:
                    event.set()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


_watchers: dict[asyncio.AbstractEventLoop, _DirWatcher] = {}


@contextlib.contextmanager
def _watching(directory: Path) -> Iterator[tuple[_DirWatcher, int]]:
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        watcher = _watchers[loop] = _DirWatcher(loop)
    wd = watcher.watch(directory)
    try:
        yield watcher, wd
    finally:
        if watcher.unwatch(wd) and _watchers.get(loop) is watcher:
            del _watchers[loop]
            watcher.close()


# -- reading -------------------------------------------------------------------------------

def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller owns it
    except FileNotFoundError:
        return None


def _rotated(path: Path, fh: BinaryIO) -> bool:
    """`path` now names another file than the one open (renamed away by rotation)."""
    try:
        return os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino
    except FileNotFoundError:
        return True


async def read_logs(
    path: Path,
    opts: LogOptions,
    *,
    running: Callable[[], Awaitable[bool]] | None = None,
    check_every: float = 1.0,
) -> AsyncIterator[bytes]:
    """The container's log as the user sees it, in chunks.

    `running` tells whether the container may still write; with `follow`, reading ends when
    it says no and the file is drained (without it, following ends only when cancelled).
    """
    render = _Render(opts)
    files = log_files(path)
    index, offset = (0, 0) if opts.tail_lines is None else _tail_start(files, opts.tail_lines)
    current: BinaryIO | None = None
    for i in range(index, len(files)):
        fh = _open(files[i])
        if fh is None:  # rotated away since we listed the files
            continue
        fh.seek(offset if i == index else 0)
        if files[i] == path and opts.follow:
            current = fh
            break
        with fh:
            # A rotated file is complete; the current one may end in a record being written.
            async for chunk in _drain(fh, render, final=files[i] != path):
                yield chunk
        if render.exhausted:
            return
    if opts.follow and not render.exhausted:
        async for chunk in _follow(path, current, render, running, check_every):
            yield chunk


async def _drain(fh: BinaryIO, render: _Render, rest: bytes = b"",
                 final: bool = True) -> AsyncIterator[bytes]:
    """Everything left in the file; a `final` file's unterminated last record included."""
    while not render.exhausted:
        data = fh.read(CHUNK)
        if not data:
            break
        lines, rest = _split(rest + data)
        out = render.lines(lines)
        if out:
            yield out
    if final and rest and not render.exhausted:
        out = render.lines([rest])
        if out:
            yield out


async def _follow(path: Path, fh: BinaryIO | None, render: _Render,
                  running: Callable[[], Awaitable[bool]] | None,
                  check_every: float) -> AsyncIterator[bytes]:
    rest = b""
    last_check = float("-inf")
    with _watching(path.parent) as (watcher, wd):
        try:
            while not render.exhausted:
                seen = watcher.counter(wd)
                if fh is None:
                    fh = _open(path)
                data = fh.read(CHUNK) if fh is not None else b""
                if data:
                    lines, rest = _split(rest + data)
                    out = render.lines(lines)
                    if out:
                        yield out
                    continue
                if fh is not None and _rotated(path, fh):
                    # The open file was renamed away and is complete: finish it, then the
                    # new current file from its start.
                    async for out in _drain(fh, render, rest):
                        yield out
                    fh.close()
                    fh, rest = None, b""
                    continue
                now = time.monotonic()
                if running is not None and now - last_check >= check_every:
                    last_check = now
                    if not await running():
                        # Exited: what it wrote before exiting is on disk; drain and stop.
                        if fh is None:
                            fh = _open(path)
                        if fh is not None:
                            async for out in _drain(fh, render, rest):
                                yield out
                        return
                await watcher.wait(wd, seen, check_every)
        finally:
            if fh is not None:
                fh.close()
