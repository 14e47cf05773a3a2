"""The store contract, run against every implementation: SQLite always, etcd when installed.

The etcd runs are against a real `etcd` (one member per test module, loopback ports, data in
a temporary directory); each test uses its own key prefix in it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from dockyard.store.etcd import EtcdStore
from dockyard.store.interface import (
    Compacted,
    KeyExists,
    KeyNotFound,
    RevisionMismatch,
    Store,
)
from dockyard.store.sqlite import SQLiteStore
from tests.etcdcluster import EtcdCluster, etcd_binary

OpenStore = Callable[[], Store]
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(params=[
    "sqlite",
    pytest.param("etcd", marks=pytest.mark.skipif(etcd_binary() is None,
                                                  reason="etcd not installed (etcd-server)")),
])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """A function that opens the store under test; calling it again reopens the same data."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "state.db")
    cluster: EtcdCluster = request.getfixturevalue("etcd")
    prefix = f"/test{next(_prefixes)}-{tmp_path.name}"
    return lambda: EtcdStore(cluster.endpoints, prefix=prefix)


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[Store]:
    s = open_store()
    await s.start()
    yield s
    await s.close()


async def test_create_get_and_revisions_increase(store: Store) -> None:
    a = await store.create("/a", b"1")
    b = await store.create("/b", b"2")
    assert b.mod_revision > a.mod_revision
    assert a.create_revision == a.mod_revision
    assert (await store.get("/a")).value == b"1"  # type: ignore[union-attr]
    assert store.current_revision() == b.mod_revision
    with pytest.raises(KeyExists):
        await store.create("/a", b"x")


async def test_update_and_delete_are_compare_and_swap(store: Store) -> None:
    a = await store.create("/a", b"1")
    a2 = await store.update("/a", b"2", expected_revision=a.mod_revision)
    assert a2.create_revision == a.create_revision
    with pytest.raises(RevisionMismatch) as err:
        await store.update("/a", b"3", expected_revision=a.mod_revision)
    assert err.value.current.value == b"2"
    with pytest.raises(RevisionMismatch):
        await store.delete("/a", expected_revision=a.mod_revision)
    gone = await store.delete("/a", expected_revision=a2.mod_revision)
    assert gone.value == b"2" and gone.mod_revision > a2.mod_revision
    assert await store.get("/a") is None
    with pytest.raises(KeyNotFound):
        await store.update("/a", b"4", expected_revision=0)


async def test_concurrent_updates_with_same_revision_one_wins(store: Store) -> None:
    a = await store.create("/a", b"0")
    results = await asyncio.gather(
        *(store.update("/a", str(i).encode(), expected_revision=a.mod_revision) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, RevisionMismatch) for r in results if isinstance(r, Exception))


async def test_list_prefix_pagination_and_snapshot(store: Store) -> None:
    for i in range(5):
        await store.create(f"/p/{i}", str(i).encode())
    await store.create("/q/0", b"q")
    page = await store.list("/p/", limit=2)
    assert [kv.key for kv in page.items] == ["/p/0", "/p/1"] and page.more
    # A write after the first page must not show in later pages read at the same revision.
    await store.update("/p/3", b"changed", expected_revision=0)
    await store.create("/p/9", b"new")
    rest = await store.list("/p/", start_after="/p/1", revision=page.revision)
    assert [kv.key for kv in rest.items] == ["/p/2", "/p/3", "/p/4"]
    assert rest.items[1].value == b"3" and not rest.more
    latest = await store.list("/p/")
    assert [kv.key for kv in latest.items][-1] == "/p/9"


async def test_watch_replays_from_revision_then_streams(store: Store) -> None:
    a = await store.create("/w/a", b"1")
    await store.update("/w/a", b"2", expected_revision=0)
    await store.create("/other", b"x")
    events = store.watch("/w/", a.mod_revision)
    first = await anext(events)
    assert (first.type, first.kv.value) == ("PUT", b"2")
    await store.delete("/w/a")
    second = await asyncio.wait_for(anext(events), 2)
    assert second.type == "DELETE" and second.kv.value == b"2"
    await events.aclose()


async def test_idle_tick_means_caught_up_to_current_revision(store: Store) -> None:
    a = await store.create("/i/a", b"1")
    events = store.watch("/i/", a.mod_revision, idle=0.1)
    assert await asyncio.wait_for(anext(events), 2) is None
    b = await store.update("/i/a", b"2", expected_revision=a.mod_revision)
    seen = await asyncio.wait_for(anext(events), 2)
    assert seen is not None and seen.kv.mod_revision == b.mod_revision
    assert await asyncio.wait_for(anext(events), 2) is None
    assert store.current_revision() >= b.mod_revision
    await events.aclose()


async def test_watch_from_compacted_revision_is_gone(store: Store) -> None:
    a = await store.create("/c", b"1")
    for i in range(3):
        await store.update("/c", str(i).encode(), expected_revision=0)
    await store.compact(store.current_revision() - 1)
    with pytest.raises(Compacted):
        await anext(store.watch("/c", a.mod_revision))
    with pytest.raises(Compacted):
        await store.list("/", revision=a.mod_revision)
    assert (await store.get("/c")).value == b"2"  # type: ignore[union-attr]


async def test_state_and_history_survive_restart(open_store: OpenStore) -> None:
    s = open_store()
    await s.start()
    a = await s.create("/a", b"1")
    await s.create("/b", b"2")
    await s.delete("/b")
    rev = s.current_revision()
    await s.close()
    s = open_store()
    await s.start()
    assert s.current_revision() >= rev  # never backwards (etcd may have moved on meanwhile)
    assert (await s.get("/a")).value == b"1"  # type: ignore[union-attr]
    assert await s.get("/b") is None
    replay = s.watch("/", a.mod_revision)
    assert [(await anext(replay)).type for _ in range(2)] == ["PUT", "DELETE"]
    await replay.aclose()
    await s.close()
