"""The client machinery against a real server: informers, work queue, leader election."""

from __future__ import annotations

import asyncio

from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer
from dockyard.client.leaderelection import LeaderElector
from dockyard.client.rest import Client
from dockyard.client.workqueue import WorkQueue

CM = by_kind("", "ConfigMap")


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_informer_tracks_adds_updates_deletes(api_client: Client) -> None:
    assert CM is not None
    await api_client.create(CM, {"metadata": {"name": "before"}}, "default")
    seen: list[tuple[str, str]] = []
    informer = Informer(api_client, CM, namespace="default", watch_timeout=1)
    informer.add_handlers(Handlers(
        on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
        on_update=lambda old, new: seen.append(("update", new["metadata"]["name"])),
        on_delete=lambda o: seen.append(("delete", o["metadata"]["name"])),
    ))
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced()
        assert informer.get("default/before") is not None
        await api_client.create(CM, {"metadata": {"name": "after"}}, "default")
        await api_client.patch(CM, "default", "after", {"data": {"k": "v"}})
        await asyncio.sleep(1.5)  # the watch times out and resumes from its last revision
        await api_client.delete(CM, "default", "before")
        await until(lambda: ("delete", "before") in seen)
        assert seen == [("add", "before"), ("add", "after"), ("update", "after"),
                        ("delete", "before")]
        assert informer.get("default/after")["data"] == {"k": "v"}  # type: ignore[index]
    finally:
        task.cancel()


async def test_work_queue_never_runs_a_key_twice_at_once() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    first = await queue.get()
    queue.add(first)  # re-added while processing: held until done
    second = await queue.get()
    assert {first, second} == {"a", "b"} and len(queue) == 0
    queue.done(first)
    assert await queue.get() == first


async def test_only_one_leader_and_failover(api_client: Client) -> None:
    leading: list[str] = []

    def candidate(name: str) -> LeaderElector:
        return LeaderElector(api_client, name="test-lock", identity=name, lease_duration=2,
                             renew_deadline=1.5, retry_period=0.2)

    async def work(name: str) -> None:
        leading.append(name)
        await asyncio.Event().wait()

    a, b = candidate("a"), candidate("b")
    task_a = asyncio.create_task(a.run(lambda: work("a")))
    await until(lambda: leading == ["a"])
    task_b = asyncio.create_task(b.run(lambda: work("b")))
    await asyncio.sleep(1.0)
    assert leading == ["a"] and not b.is_leader
    task_a.cancel()  # the leader dies without releasing: b waits out the lease
    await until(lambda: leading == ["a", "b"], timeout=6)
    task_b.cancel()
    await asyncio.gather(task_a, task_b, return_exceptions=True)
