"""A thin async wrapper over the runc command line, one state root per cluster.

Every call passes `--root <cluster state dir>` (so `runc list` of one cluster never shows
another's containers) and `--log /dev/null`: runc then prints a failure as one plain line on
stderr, which becomes the RuntimeFailure message. `runc create` is not here: it is run by the
shim (native/shim.c) so that the container's parent is the shim, not the agent. `runc exec`
is run as a child of the agent, because an exec is as short-lived as the request that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dockyard.runtime import spawn
from dockyard.runtime.cri import NotFound, RuntimeFailure

Obj = dict[str, Any]


class Runc:
    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    def base_args(self) -> list[str]:
        return [self.binary, "--root", str(self.root), "--log", "/dev/null"]

    async def run(self, *args: str, check: bool = True) -> tuple[int, bytes, str]:
        try:
            done = await spawn.run([*self.base_args(), *args])
        except FileNotFoundError as e:
            raise RuntimeFailure(f"runc not found at {self.binary!r}: install it "
                                 "(Debian: apt-get install runc)") from e
        message = done.stderr.decode(errors="replace").strip()
        if check and done.returncode != 0:
            raise error(f"runc {args[0]} {args[-1]}", message)
        return done.returncode, done.stdout, message

    async def version(self) -> str:
        _, out, _ = await self.run("--version")
        first = out.decode().splitlines()[0] if out else "runc"
        return first.replace(" version", "")  # "runc 1.1.5+ds1"

    async def start(self, cid: str) -> None:
        await self.run("start", cid)

    async def state(self, cid: str) -> Obj | None:
        """runc's view of one container (status created/running/paused/stopped), or None."""
        rc, out, msg = await self.run("state", cid, check=False)
        if rc != 0:
            if "does not exist" in msg:
                return None
            raise error(f"runc state {cid}", msg)
        return json.loads(out)

    async def list(self) -> list[Obj]:
        _, out, _ = await self.run("list", "--format", "json")
        return json.loads(out) or []

    async def kill(self, cid: str, sig: int = signal.SIGTERM, *, all: bool = False) -> None:
        await self.run("kill", *(["--all"] if all else []), cid, str(int(sig)))

    async def delete(self, cid: str, *, force: bool = False) -> None:
        """Delete (idempotent: a container runc does not know is already deleted)."""
        rc, _, msg = await self.run("delete", *(["--force"] if force else []), cid, check=False)
        if rc != 0 and "does not exist" not in msg:
            raise error(f"runc delete {cid}", msg)

    async def pause(self, cid: str) -> None:
        await self.run("pause", cid)

    async def resume(self, cid: str) -> None:
        await self.run("resume", cid)

    async def stats(self, cid: str) -> Obj:
        """`runc events --stats`: one sample of the container's cgroup statistics."""
        _, out, _ = await self.run("events", "--stats", cid)
        return json.loads(out).get("data", {})

    async def ps(self, cid: str) -> list[int]:
        _, out, _ = await self.run("ps", "--format", "json", cid)
        return json.loads(out) or []

    def exec_args(self, cid: str, argv: list[str], *, tty: bool, pid_file: Path) -> list[str]:
        return [*self.base_args(), "exec", *(["--tty"] if tty else []), "--pid-file",
                str(pid_file), cid, *argv]


def error(what: str, message: str) -> RuntimeFailure:
    """runc's words, made into the right exception."""
    text = message or "failed without a message"
    if "does not exist" in text:
        return NotFound(f"{what}: {text}")
    return RuntimeFailure(f"{what}: {text}")


class RuncExec:
    """One `runc exec` (kubectl exec): a child of the agent, streamed, killable.

    The exec'd process's host pid comes from runc's --pid-file, so a kill reaches the process
    itself and not only runc (which would leave it running). With a tty, runc's stdio is a
    pty the agent holds: runc puts it in raw mode and copies it to the container's terminal,
    and forwards SIGWINCH after a resize (runc reads the new size from its stdin).
    """

    def __init__(self, proc: asyncio.subprocess.Process, pid_file: Path,
                 master: int | None) -> None:
        self.proc = proc
        self.pid_file = pid_file
        self.master = master
        self._stdin_closed = False

    @classmethod
    async def spawn(cls, runc: Runc, cid: str, argv: list[str], *, tty: bool, stdin: bool,
                    pid_file: Path, width: int = 80, height: int = 24) -> RuncExec:
        args = runc.exec_args(cid, argv, tty=tty, pid_file=pid_file)
        if tty:
            master, slave = os.openpty()
            _set_size(master, width, height)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            return cls(proc, pid_file, master)
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        return cls(proc, pid_file, None)

    async def write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            await _write_fd(self.master, data)
        elif self.proc.stdin is not None and not self._stdin_closed:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self.master is not None:
            await _write_fd(self.master, b"\x04")  # end of input for the terminal's reader
        elif self.proc.stdin is not None and not self._stdin_closed:
            self._stdin_closed = True
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        if self.master is not None:
            try:
                async for chunk in _read_fd(self.master):
                    yield 1, chunk
            finally:
                self.close()  # the terminal is done: runc has exited
            return
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

        async def pump(stream: int, reader: asyncio.StreamReader | None) -> None:
            try:
                while reader is not None and (chunk := await reader.read(65536)):
                    await queue.put((stream, chunk))
            finally:
                await queue.put(None)

        tasks = [asyncio.create_task(pump(1, self.proc.stdout)),
                 asyncio.create_task(pump(2, self.proc.stderr))]
        try:
            ended = 0
            while ended < 2:
                item = await queue.get()
                if item is None:
                    ended += 1
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()

    async def resize(self, width: int, height: int) -> None:
        if self.master is None:
            return
        _set_size(self.master, width, height)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGWINCH)

    async def wait(self) -> int:
        code = await self.proc.wait()
        self.pid_file.unlink(missing_ok=True)
        return code if code >= 0 else 128 - code

    async def kill(self) -> None:
        """SIGKILL the exec'd process; runc, its reaper, then exits (else it is killed too,
        which would leave a zombie in the container if its init does not reap)."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def close(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        self.pid_file.unlink(missing_ok=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def _read_fd(fd: int) -> AsyncIterator[bytes]:
    """Chunks from a non-blocking fd until EOF (EIO: a pty whose other side is closed)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(fd, _resolve, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            continue
        except OSError:
            return
        if not chunk:
            return
        yield chunk


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, _resolve, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
            continue
        view = view[n:]
