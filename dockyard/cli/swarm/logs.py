"""`service logs`: every task's log through the API server's `pods/log`, each line prefixed
with the task as Docker prefixes it (`web.1.k3hs7clc6bvt@node-1    | ...`).

Without `--follow` the tasks' lines are merged in time order (they are read with timestamps);
with it, every task is streamed as its lines come, and tasks that start later join in.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

import aiohttp

from dockyard.cli.swarm.cluster import PODS, Swarm
from dockyard.cli.swarm.tables import truncate_id
from dockyard.cli.swarm.tasks import Task, tasks_of
from dockyard.client.rest import Client

Obj = dict[str, Any]
NEW_TASKS_EVERY = 1.0


def prefix_of(task: Task, no_trunc: bool) -> str:
    return f"{task.name}.{truncate_id(task.id, no_trunc)}@{task.node or 'unassigned'}"


def format_line(prefix: str, width: int, line: str, *, raw: bool) -> str:
    return line if raw else f"{prefix:<{width}}    | {line}"


def split_timestamp(line: str) -> tuple[str, str]:
    """A `timestamps=true` log line → (RFC 3339 time, text)."""
    stamp, _, text = line.partition(" ")
    return stamp, text


async def _stream(client: Client, namespace: str, pod: str, params: dict[str, str]
                  ) -> AsyncIterator[str]:
    """Lines of one pod's log (nothing when its container has not started)."""
    # The REST client decodes JSON; a log is text, so it is read from the session directly.
    session = client._http()  # noqa: SLF001 (see the report: a streaming verb is wanted)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with session.get(Client.path(PODS, namespace, pod, "log"), params=params,
                           timeout=timeout) as response:
        if response.status >= 400:
            return
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1:]
                yield line.decode(errors="replace")
        if buffer:
            yield buffer.decode(errors="replace")


async def service_logs(swarm: Swarm, name: str, *, follow: bool, tail: str,
                       timestamps: bool, no_trunc: bool, raw: bool,
                       out: TextIO = sys.stdout) -> None:
    snap = await swarm.snapshot(name)
    node_ids = {v: k for k, v in (await swarm.node_names()).items()}

    async def tasks() -> list[tuple[Task, str]]:
        pods = await swarm.pods(name)
        await swarm.record_slots(pods)
        found = tasks_of(pods, snap.spec.name, snap.spec.mode, node_ids)
        return [(t, t.pod) for t in found]

    params = {"timestamps": "true"}
    if tail not in ("all", ""):
        params["tailLines"] = str(int(tail))
    current = await tasks()
    width = max((len(prefix_of(t, no_trunc)) for t, _ in current), default=0)

    def emit(task: Task, line: str) -> None:
        stamp, text = split_timestamp(line)
        shown = f"{stamp} {text}" if timestamps else text
        out.write(format_line(prefix_of(task, no_trunc), width, shown, raw=raw) + "\n")
        out.flush()

    if not follow:
        merged: list[tuple[str, int, Task, str]] = []

        async def read(i: int, task: Task, pod: str) -> None:
            async for line in _stream(swarm.client, swarm.namespace, pod, params):
                merged.append((split_timestamp(line)[0], i, task, line))

        await asyncio.gather(*(read(i, t, p) for i, (t, p) in enumerate(current)))
        for _, _, task, line in sorted(merged, key=lambda m: (m[0], m[1])):
            emit(task, line)
        return

    followed: dict[str, asyncio.Task[None]] = {}

    async def pump(task: Task, pod: str) -> None:
        async for line in _stream(swarm.client, swarm.namespace, pod,
                                  {**params, "follow": "true"}):
            emit(task, line)

    try:
        while True:
            for task, pod in current:
                if pod not in followed and task.state not in ("pending", "assigned",
                                                               "preparing", "rejected"):
                    followed[pod] = asyncio.create_task(pump(task, pod))
            await asyncio.sleep(NEW_TASKS_EVERY)
            current = await tasks()
    finally:
        for t in followed.values():
            t.cancel()
        for t in followed.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
