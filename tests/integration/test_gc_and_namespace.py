"""The garbage collector and the namespace controller against a real server.

Owner/dependent chains are written directly through the API (the test sets ownerReferences,
as the workload controllers would); the controllers run as tasks in the test's loop. Bound
pods are finished by a small stand-in for the node agent, so foreground deletion and
namespace deletion wait for them exactly as they wait for a kubelet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dockyard.api.resources import ResourceInfo, by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.rest import ApiError, Client
from dockyard.controllers.garbagecollector import GarbageCollector
from dockyard.controllers.namespace import NamespaceController
from tests.components import running as running_components
from tests.components import until
from tests.conftest import ServerProcess

Obj = dict[str, Any]


def _info(group: str, kind: str) -> ResourceInfo:
    info = by_kind(group, kind)
    assert info is not None
    return info


CM = _info("", "ConfigMap")
PODS = _info("", "Pod")
NODES = _info("", "Node")
NAMESPACES = _info("", "Namespace")
SECRETS = _info("", "Secret")
DEPLOYMENTS = _info("apps", "Deployment")
REPLICASETS = _info("apps", "ReplicaSet")


@asynccontextmanager
async def controllers(client: Client, *, namespace: bool = False) -> AsyncIterator[None]:
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "test-controllers")
    running = [GarbageCollector(client, factory, recorder)]
    if namespace:
        running.append(NamespaceController(client, factory, recorder,  # type: ignore[arg-type]
                                           max_recheck_delay=0.3))
    async with running_components(factory, recorder, running):
        yield


@asynccontextmanager
async def node_agent(client: Client) -> AsyncIterator[None]:
    """Stands in for the kubelet: finishes every terminating pod (grace period 0)."""

    async def loop() -> None:
        while True:
            for pod in (await client.list(PODS)).get("items") or []:
                meta = pod["metadata"]
                if meta.get("deletionTimestamp"):
                    try:
                        await client.delete(PODS, meta["namespace"], meta["name"],
                                            grace_period_seconds=0)
                    except ApiError:
                        pass
            await asyncio.sleep(0.05)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def ref(owner: Obj, *, block: bool = False, controller: bool = False) -> Obj:
    out: Obj = {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
    if block:
        out["blockOwnerDeletion"] = True
    if controller:
        out["controller"] = True
    return out


async def make(client: Client, info: ResourceInfo, name: str, *, ns: str | None = "default",
               owners: list[Obj] | None = None, body: Obj | None = None,
               finalizers: list[str] | None = None) -> Obj:
    body = dict(body or {})
    meta: Obj = {**body.pop("metadata", {}), "name": name}
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    obj = {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta, **body}
    created = await client.create(info, obj, ns if info.namespaced else None)
    created.setdefault("apiVersion", info.api_version)
    created.setdefault("kind", info.kind)
    return created


async def exists(client: Client, info: ResourceInfo, name: str, ns: str | None = "default",
                 ) -> Obj | None:
    try:
        return await client.get(info, ns if info.namespaced else None, name)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


async def gone(client: Client, info: ResourceInfo, name: str, ns: str | None = "default",
               ) -> bool:
    return await exists(client, info, name, ns) is None


LABELS = {"app": "web"}
TEMPLATE = {"metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


async def workload(client: Client, ns: str = "default", *, pods: int = 2,
                   node: str = "node-a") -> tuple[Obj, Obj, list[Obj]]:
    """A Deployment owning a ReplicaSet owning bound pods, wired as the controllers do."""
    spec = {"replicas": pods, "selector": {"matchLabels": LABELS}, "template": TEMPLATE}
    deploy = await make(client, DEPLOYMENTS, "web", ns=ns, body={"spec": spec})
    rs = await make(client, REPLICASETS, "web-1", ns=ns, body={"spec": spec},
                    owners=[ref(deploy, block=True, controller=True)])
    created = [await make(client, PODS, f"web-1-{i}", ns=ns,
                          owners=[ref(rs, block=True, controller=True)],
                          body={"metadata": {"labels": LABELS},
                                "spec": {**TEMPLATE["spec"], "nodeName": node}})
               for i in range(pods)]
    return deploy, rs, created


# -- the garbage collector ---------------------------------------------------------------------


async def test_background_deletion_cascades_two_levels(api_client: Client) -> None:
    c = api_client
    root = await make(c, CM, "root")
    child = await make(c, CM, "child", owners=[ref(root)])
    await make(c, PODS, "grandchild", owners=[ref(child)], body={"spec": TEMPLATE["spec"]})
    node = await make(c, NODES, "node-x", ns=None)
    await make(c, CM, "node-owned", owners=[ref(node)])  # a cluster-scoped owner
    await make(c, CM, "bystander")
    async with controllers(c):
        await asyncio.sleep(0.3)  # owners alive: nothing is collected
        assert await exists(c, CM, "child") and await exists(c, PODS, "grandchild")
        await c.delete(CM, "default", "root")
        await c.delete(NODES, None, "node-x")
        await until(lambda: gone(c, PODS, "grandchild"))
        assert await gone(c, CM, "child") and await gone(c, CM, "root")
        await until(lambda: gone(c, CM, "node-owned"))
        assert await exists(c, CM, "bystander")


async def test_dangling_owner_found_at_startup_and_second_owner_survives(
        api_client: Client) -> None:
    c = api_client
    a, b = await make(c, CM, "a"), await make(c, CM, "b")
    shared = await make(c, CM, "shared", owners=[ref(a), ref(b)])
    orphaned = await make(c, CM, "orphaned", owners=[ref(a)])
    # A reference to an object of the right name but another uid is dangling too.
    impostor = {**ref(b), "uid": "00000000-0000-0000-0000-000000000000"}
    await make(c, CM, "impostor-child", owners=[impostor])
    await c.delete(CM, "default", "a")  # before the collector runs: found by its first sync
    async with controllers(c):
        await until(lambda: gone(c, CM, "orphaned"))
        await until(lambda: gone(c, CM, "impostor-child"))
        await until(lambda: _refs(c, "shared", [b["metadata"]["uid"]]))
        assert (await exists(c, CM, "shared"))["metadata"]["uid"] == shared["metadata"]["uid"]
        await c.delete(CM, "default", "b")
        await until(lambda: gone(c, CM, "shared"))
    assert orphaned


async def _refs(c: Client, name: str, uids: list[str]) -> bool:
    obj = await exists(c, CM, name)
    return obj is not None and [r["uid"] for r in obj["metadata"].get(
        "ownerReferences") or []] == uids


async def test_foreground_owner_waits_for_blocking_dependents(api_client: Client) -> None:
    c = api_client
    owner = await make(c, CM, "owner")
    # The blocking dependent carries a finalizer of its own, so it lingers while deleting.
    await make(c, CM, "held", owners=[ref(owner, block=True)], finalizers=["example.com/hold"])
    await make(c, CM, "free", owners=[ref(owner)])
    async with controllers(c):
        await c.delete(CM, "default", "owner", propagation_policy="Foreground")
        await until(lambda: gone(c, CM, "free"))
        await until(lambda: _deleting(c, CM, "held"))
        await asyncio.sleep(0.3)
        still = await exists(c, CM, "owner")
        assert still is not None and still["metadata"]["finalizers"] == ["foregroundDeletion"]
        await c.patch(CM, "default", "held", {"metadata": {"finalizers": None}})
        await until(lambda: gone(c, CM, "owner"))
        assert await gone(c, CM, "held")


async def _deleting(c: Client, info: ResourceInfo, name: str, ns: str = "default") -> bool:
    obj = await exists(c, info, name, ns)
    return obj is not None and bool(obj["metadata"].get("deletionTimestamp"))


async def test_orphan_keeps_dependents_and_other_finalizers(api_client: Client) -> None:
    c = api_client
    owner = await make(c, CM, "owner", finalizers=["example.com/keep"])
    other = await make(c, CM, "other")
    await make(c, CM, "d1", owners=[ref(owner, block=True)])
    await make(c, CM, "d2", owners=[ref(owner), ref(other)])
    async with controllers(c):
        await c.delete(CM, "default", "owner", propagation_policy="Orphan")
        # The orphan finalizer goes; the unrelated one is kept (a compare-and-swap write).
        await until(lambda: _finalizers(c, "owner", ["example.com/keep"]))
        assert await _refs(c, "d1", []) and await _refs(c, "d2", [other["metadata"]["uid"]])
        await c.patch(CM, "default", "owner", {"metadata": {"finalizers": None}})
        await until(lambda: gone(c, CM, "owner"))
        await asyncio.sleep(0.2)
        assert await exists(c, CM, "d1") and await exists(c, CM, "d2")


async def _finalizers(c: Client, name: str, wanted: list[str]) -> bool:
    obj = await exists(c, CM, name)
    return obj is not None and obj["metadata"].get("finalizers") == wanted


async def test_kubectl_cascade_foreground_waits_for_pods(server: ServerProcess,
                                                         api_client: Client) -> None:
    c = api_client
    await workload(c)
    async with controllers(c):
        deleting = asyncio.create_task(asyncio.to_thread(
            server.kubectl, "delete", "deployment", "web", "--cascade=foreground",
            "--timeout=30s"))
        # The ReplicaSet is deleted in the foreground too; its bound pods only terminate.
        await until(lambda: _deleting(c, PODS, "web-1-0"))
        await until(lambda: _deleting(c, PODS, "web-1-1"))
        await asyncio.sleep(0.3)
        deploy = await exists(c, DEPLOYMENTS, "web")
        rs = await exists(c, REPLICASETS, "web-1")
        assert deploy and deploy["metadata"]["finalizers"] == ["foregroundDeletion"]
        assert rs and rs["metadata"]["finalizers"] == ["foregroundDeletion"]
        assert not deleting.done()
        async with node_agent(c):
            result = await deleting
        assert 'deployment.apps "web" deleted' in result.stdout
        assert await gone(c, DEPLOYMENTS, "web") and await gone(c, REPLICASETS, "web-1")
        assert (await c.list(PODS, "default"))["items"] == []


async def test_kubectl_cascade_orphan_keeps_replicasets(server: ServerProcess,
                                                        api_client: Client) -> None:
    c = api_client
    _, rs, _ = await workload(c)
    async with controllers(c):
        await asyncio.to_thread(server.kubectl, "delete", "deployment", "web",
                                "--cascade=orphan", "--timeout=30s")
        assert await gone(c, DEPLOYMENTS, "web")
        left = await exists(c, REPLICASETS, "web-1")
        assert left and not left["metadata"].get("ownerReferences")
        pods = (await c.list(PODS, "default"))["items"]
        assert len(pods) == 2 and all(p["metadata"]["ownerReferences"][0]["uid"] ==
                                      rs["metadata"]["uid"] for p in pods)
        assert not any(p["metadata"].get("deletionTimestamp") for p in pods)


# -- the namespace controller ------------------------------------------------------------------


async def test_kubectl_delete_namespace_removes_content_then_namespace(
        server: ServerProcess, api_client: Client) -> None:
    c = api_client
    await c.create(NAMESPACES, {"metadata": {"name": "team"}})
    await workload(c, "team", pods=1)
    await make(c, CM, "settings", ns="team")
    await make(c, SECRETS, "token", ns="team", body={"stringData": {"k": "v"}})
    await make(c, CM, "keep", ns="default")
    async with controllers(c, namespace=True):
        deleting = asyncio.create_task(asyncio.to_thread(
            server.kubectl, "delete", "namespace", "team", "--timeout=30s"))
        # Everything but the bound pod goes at once; the pod keeps the namespace Terminating.
        await until(lambda: _condition(c, "team", "NamespaceContentRemaining", "True"))
        ns = await exists(c, NAMESPACES, "team", None)
        assert ns and ns["status"]["phase"] == "Terminating"
        remaining = _by_type(ns)["NamespaceContentRemaining"]
        assert remaining["reason"] == "SomeResourcesRemain"
        assert remaining["message"] == "Some resources are remaining: pods. has 1 resource " \
                                       "instances"
        assert _by_type(ns)["NamespaceDeletionContentFailure"]["reason"] == "ContentDeleted"
        assert await gone(c, CM, "settings", "team") and await gone(c, SECRETS, "token", "team")
        assert not deleting.done()
        async with node_agent(c):
            result = await deleting
        assert 'namespace "team" deleted' in result.stdout
        assert await gone(c, NAMESPACES, "team", None)
        assert (await c.list(PODS, "team"))["items"] == []
        assert await exists(c, CM, "keep")
        missing = server.kubectl("get", "namespace", "team", check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr


def _by_type(ns: Obj) -> dict[str, Obj]:
    return {cond["type"]: cond for cond in (ns.get("status") or {}).get("conditions") or []}


async def _condition(c: Client, name: str, type_: str, status: str) -> bool:
    ns = await exists(c, NAMESPACES, name, None)
    return ns is not None and _by_type(ns).get(type_, {}).get("status") == status
