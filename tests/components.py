"""Helpers for tests that run components in the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
                every: float = 0.05) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached: {what}")
        await asyncio.sleep(every)


@asynccontextmanager
async def running(factory: InformerFactory, recorder: EventRecorder,
                  controllers: list[Controller]) -> AsyncIterator[None]:
    """Start the recorder, informers and controllers; stop all of them on exit."""
    recorder.start()
    factory.start()
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
        await recorder.stop()
