"""`dockyard server --datastore etcd://...` against real etcd members on loopback.

What a user sees: kubectl create/get/watch work, objects sit in etcd under Kubernetes' key
layout, a server restart finds every object, and a three-member etcd keeps the API working
(writes and running watches) when a member is killed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.store.etcd import EtcdStore
from dockyard.store.interface import RevisionMismatch
from tests.conftest import API_ONLY, ServerProcess, kubectl_binary
from tests.etcdcluster import EtcdCluster, etcd_binary

pytestmark = pytest.mark.skipif(
    etcd_binary() is None or shutil.which("etcdctl") is None,
    reason="etcd not installed (apt-get install etcd-server etcd-client)")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd") as cluster:
        yield cluster


def start_server(tmp_path: Path, cluster: EtcdCluster) -> ServerProcess:
    server = ServerProcess(tmp_path / "data",
                           extra_args=[*API_ONLY, "--datastore", cluster.datastore])
    server.data_dir.mkdir(exist_ok=True)
    server.start(timeout=40)
    return server


def watch_configmaps(server: ServerProcess) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
    watcher = subprocess.Popen([kubectl_binary(), "get", "configmaps", "-w", "--no-headers"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.0)  # kubectl lists, then watches
    return watcher


def stop_watch(watcher: subprocess.Popen[str]) -> list[str]:
    watcher.terminate()
    out, _ = watcher.communicate(timeout=10)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def configmap_names(server: ServerProcess) -> set[str]:
    out = server.kubectl("get", "configmaps", "-o", "name").stdout
    return {line.removeprefix("configmap/") for line in out.split()}


def test_kubectl_on_etcd_and_restart(tmp_path: Path, etcd: EtcdCluster) -> None:
    server = start_server(tmp_path, etcd)
    try:
        watcher = watch_configmaps(server)
        try:
            server.kubectl("create", "configmap", "one", "--from-literal=k=v")
            assert server.kubectl("get", "configmap", "one", "-o",
                                  "jsonpath={.data.k}").stdout == "v"
            server.kubectl("create", "configmap", "two", "--from-literal=k=w")
            server.kubectl("delete", "configmap", "one")
            time.sleep(1.0)
        finally:
            seen = stop_watch(watcher)
        assert seen.count("one") >= 2 and "two" in seen, seen  # create + delete, create
        keys = subprocess.run(
            ["etcdctl", "--endpoints", etcd.endpoints[0], "get", "--prefix", "--keys-only",
             "/registry/core/configmaps/default/"],
            capture_output=True, text=True, check=True, timeout=10).stdout.split()
        assert keys == ["/registry/core/configmaps/default/two"]

        server.stop()
        server.start(timeout=40)
        assert configmap_names(server) == {"two"}
        assert "kube-system" in server.kubectl("get", "namespaces", "-o", "name").stdout
        server.kubectl("create", "configmap", "three")
        assert configmap_names(server) == {"two", "three"}
    finally:
        server.stop()


def test_three_members_one_killed_api_keeps_working(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        server = start_server(tmp_path, cluster)
        try:
            server.kubectl("create", "configmap", "before")
            watcher = watch_configmaps(server)
            try:
                # The member the server talks to (the first endpoint), made the raft leader
                # first: the server must move on and wait out an election.
                cluster.make_leader(0)
                cluster.kill(0)
                for i in range(3):
                    server.kubectl("create", "configmap", f"after-{i}")
                time.sleep(1.0)
            finally:
                seen = stop_watch(watcher)
            expected = {"before", "after-0", "after-1", "after-2"}
            assert expected <= set(seen), seen  # the running watch moved to another member
            assert configmap_names(server) == expected

            server.stop()  # and a server starting while the member is still down
            server.start(timeout=40)
            assert configmap_names(server) == expected
        finally:
            server.stop()


async def test_two_stores_share_one_etcd(etcd: EtcdCluster) -> None:
    """What several API servers over one etcd rely on; prefixes keep clusters apart."""
    a = EtcdStore(etcd.endpoints, prefix="/c1")
    b = EtcdStore(etcd.endpoints, prefix="/c1")
    other = EtcdStore(etcd.endpoints, prefix="/c10")  # "/c1" is a prefix of it
    for store in (a, b, other):
        await store.start()
    try:
        events = b.watch("/registry/", b.current_revision())
        created = await a.create("/registry/x", b"1")
        seen = await asyncio.wait_for(anext(events), 5)
        assert seen is not None and (seen.kv.key, seen.kv.mod_revision) == (
            "/registry/x", created.mod_revision)
        await b.update("/registry/x", b"2", expected_revision=created.mod_revision)
        with pytest.raises(RevisionMismatch):
            await a.update("/registry/x", b"3", expected_revision=created.mod_revision)
        assert (await other.list("/registry/")).items == []
        await other.create("/registry/y", b"other cluster")
        assert [kv.key for kv in (await a.list("")).items] == ["/registry/x"]
        everything = a.watch("", created.mod_revision, idle=0.2)
        assert [e.kv.key for e in [await anext(everything)] if e] == ["/registry/x"]
        assert await anext(everything) is None  # and nothing of the other cluster
        await everything.aclose()
        await events.aclose()
    finally:
        for store in (a, b, other):
            await store.close()
