"""A runtime for testing the agent's log and exec port without containers.

`FakeExecRuntime` answers `list_containers`/`container_status` from containers the test adds
(each pointing at a CRI log file the test writes) and runs `exec` as a local subprocess, with a
real pseudo-terminal for `tty=True`, so the channel.k8s.io protocol is exercised end to end.
Only the methods the agent's HTTPS server uses are implemented.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from dockyard.runtime.cri import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerState,
    ContainerStatus,
    NotFound,
    RuntimeFailure,
)


class FakeExecRuntime:
    name = "fake"
    version = "fake 0.1"

    def __init__(self) -> None:
        self.containers: dict[str, ContainerStatus] = {}
        self.sessions: list[LocalExec] = []

    def add(self, namespace: str, pod: str, container: str, *, log_path: Path,
            attempt: int = 0, state: ContainerState = ContainerState.RUNNING,
            uid: str = "") -> ContainerStatus:
        cid = f"{pod}-{container}-{attempt}"
        status = ContainerStatus(
            id=cid, sandbox_id=f"sandbox-{pod}", name=container, attempt=attempt, state=state,
            image_ref="busybox", image_id="sha256:0", created_at=float(attempt),
            log_path=log_path,
            labels={LABEL_POD_NAMESPACE: namespace, LABEL_POD_NAME: pod,
                    LABEL_CONTAINER_NAME: container, LABEL_POD_UID: uid or f"uid-{pod}"})
        self.containers[cid] = status
        return status

    def set_state(self, cid: str, state: ContainerState) -> None:
        self.containers[cid] = replace(self.containers[cid], state=state)

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        return [c for c in self.containers.values()
                if sandbox_id is None or c.sandbox_id == sandbox_id]

    async def container_status(self, container_id: str) -> ContainerStatus:
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFound(container_id) from None

    async def exec(self, container_id: str, argv: list[str], *, tty: bool, stdin: bool,
                   width: int = 80, height: int = 24) -> LocalExec:
        await self.container_status(container_id)
        try:
            session = await LocalExec.start(argv, tty=tty, stdin=stdin, width=width,
                                            height=height)
        except FileNotFoundError:
            raise RuntimeFailure(f'exec: "{argv[0]}": executable file not found in $PATH'
                                 ) from None
        self.sessions.append(session)
        return session


class LocalExec:
    """An ExecSession over a local process: pipes, or a pty whose size `resize` sets."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self.proc = proc
        self.master = master
        self.resizes: list[tuple[int, int]] = []

    @classmethod
    async def start(cls, argv: list[str], *, tty: bool, stdin: bool, width: int,
                    height: int) -> LocalExec:
        if not tty:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            return cls(proc, None)
        master, slave = pty.openpty()
        _set_size(master, width, height)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master)

    async def write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            os.write(self.master, data)
        elif self.proc.stdin is not None:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self.master is not None:
            os.write(self.master, b"\x04")  # a terminal's end of input
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        if self.master is not None:
            async for data in _read_pty(self.master):
                yield 1, data
            return
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        async def pump(stream: int, reader: asyncio.StreamReader | None) -> None:
            while reader is not None and (data := await reader.read(65536)):
                await queue.put((stream, data))
            await queue.put((stream, b""))

        tasks = [asyncio.create_task(pump(1, self.proc.stdout)),
                 asyncio.create_task(pump(2, self.proc.stderr))]
        open_streams = 2
        try:
            while open_streams:
                stream, data = await queue.get()
                if data:
                    yield stream, data
                else:
                    open_streams -= 1
        finally:
            for task in tasks:
                task.cancel()

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))
        if self.master is not None:
            _set_size(self.master, width, height)

    async def wait(self) -> int:
        code = await self.proc.wait()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        return code

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


def _set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def _read_pty(master: int) -> AsyncIterator[bytes]:
    """The terminal's output until the last process holding it exits (EIO)."""
    loop = asyncio.get_running_loop()
    while True:
        ready = loop.create_future()
        loop.add_reader(master, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(master)
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            continue
        except OSError:  # EIO: no process has the terminal open any more
            return
        if not data:
            return
        yield data
