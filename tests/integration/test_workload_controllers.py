"""ReplicaSet, Deployment, Job and TTL-after-finished controllers against a real server.

The controllers run in the test's event loop, talking to the `server` fixture through the
API only; `tests/fakenode.py` plays the node agent (pods become Running/Ready, Succeeded or
Failed). kubectl runs in a thread so the controllers keep working while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client
from dockyard.controllers.deployment import DeploymentController
from dockyard.controllers.garbagecollector import GarbageCollector
from dockyard.controllers.job import JobController
from dockyard.controllers.replicaset import ReplicaSetController
from dockyard.controllers.ttlafterfinished import TTLAfterFinishedController
from tests.components import running as running_components
from tests.components import until
from tests.conftest import ServerProcess
from tests.fakenode import FakeNode

PODS = by_kind("", "Pod")
RS = by_kind("apps", "ReplicaSet")
DEPLOY = by_kind("apps", "Deployment")
JOBS = by_kind("batch", "Job")
assert PODS and RS and DEPLOY and JOBS
NS = "default"
Obj = dict[str, Any]


@contextlib.asynccontextmanager
async def controllers(client: Client, *, gc: bool = False) -> AsyncIterator[None]:
    """Our four controllers (short Job back-off), plus the garbage collector if asked."""
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "test-controller-manager")
    running: list[Any] = [
        ReplicaSetController(client, factory, recorder),
        DeploymentController(client, factory, recorder),
        JobController(client, factory, recorder, pod_failure_backoff=0.1),
        TTLAfterFinishedController(client, factory, recorder),
    ]
    if gc:
        running.append(GarbageCollector(client, factory, recorder,
                                        resources=[PODS, RS, DEPLOY, JOBS]))
    async with running_components(factory, recorder, running):
        yield


async def kubectl(server: ServerProcess, *args: str,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(server.kubectl, *args, check=check)


def pod_template(app: str, image: str = "nginx:1.25", **pod_spec: Any) -> Obj:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": app, "image": image}], **pod_spec}}


def replicaset(name: str, replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": pod_template(name)}}


def deployment(name: str, replicas: int, image: str = "nginx:1.25", **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": pod_template(name, image), **spec}}


def job(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "work", "image": "busybox"}]}}, **spec}}


async def pods_of(client: Client, app: str) -> list[Obj]:
    items = (await client.list(PODS, NS, label_selector=f"app={app}"))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def condition(obj: Obj, type_: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), {})


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


# -- ReplicaSet --------------------------------------------------------------------------------


async def test_replicaset_creates_replaces_and_never_overshoots(api_client: Client) -> None:
    seen_max = 0
    watcher = Informer(api_client, PODS, namespace=NS, label_selector="app=web")

    def count(_: Obj, *__: Obj) -> None:
        nonlocal seen_max
        seen_max = max(seen_max, len(watcher.list()))

    watcher.add_handlers(Handlers(count, count, count))
    watch_task = asyncio.create_task(watcher.run())
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("ready")
        await api_client.create(RS, replicaset("web", 5))
        pods = await until(lambda: _n_pods(api_client, "web", 5), what="5 pods")
        rs = await api_client.get(RS, NS, "web")
        for pod in pods:
            assert pod["metadata"]["name"].startswith("web-")
            assert len(pod["metadata"]["name"]) == len("web-") + 5
            assert pod["metadata"]["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
            assert pod["spec"]["containers"][0]["image"] == "nginx:1.25"
        await until(lambda: _rs_status(api_client, "web", readyReplicas=5, availableReplicas=5,
                                       replicas=5, fullyLabeledReplicas=5, observedGeneration=1),
                    what="status")
        victim = pods[0]["metadata"]["name"]
        await api_client.delete(PODS, NS, victim)
        replaced = await until(lambda: _n_pods(api_client, "web", 5, without=victim),
                               what="replacement")
        assert victim not in {p["metadata"]["name"] for p in replaced}
        await asyncio.sleep(0.3)
        assert len(await pods_of(api_client, "web")) == 5
    watch_task.cancel()
    assert seen_max == 5  # expectations: never more pods than replicas


async def _n_pods(client: Client, app: str, n: int, without: str = "") -> list[Obj] | None:
    pods = await pods_of(client, app)
    names = {p["metadata"]["name"] for p in pods}
    return pods if len(pods) == n and without not in names else None


async def _rs_status(client: Client, name: str, **want: int) -> bool:
    st = (await client.get(RS, NS, name)).get("status") or {}
    return all(st.get(k, 0) == v for k, v in want.items())


async def test_replicaset_scale_down_deletes_not_ready_pods_first(
        api_client: Client, server: ServerProcess) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy(None)
        await api_client.create(RS, replicaset("web", 4))
        pods = await until(lambda: _n_pods(api_client, "web", 4), what="4 pods")
        keep = sorted(p["metadata"]["name"] for p in pods)[:2]
        for name in keep:
            await node.ready(name)
        await until(lambda: _rs_status(api_client, "web", readyReplicas=2), what="2 ready")
        await kubectl(server, "scale", "replicaset", "web", "--replicas=2")
        left = await until(lambda: _n_pods(api_client, "web", 2), what="scaled down")
        assert sorted(p["metadata"]["name"] for p in left) == keep
        await until(lambda: _rs_status(api_client, "web", replicas=2, readyReplicas=2,
                                       observedGeneration=2), what="status after scale")


async def test_replicaset_adopts_orphans_and_releases_strays(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client):
        orphan = await api_client.create(PODS, {
            "metadata": {"name": "orphan", "namespace": NS, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}})
        created = await api_client.create(RS, replicaset("web", 2))
        pods = await until(lambda: _n_pods(api_client, "web", 2), what="2 pods")
        assert "orphan" in {p["metadata"]["name"] for p in pods}
        adopted = await api_client.get(PODS, NS, "orphan")
        refs = adopted["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("ReplicaSet", created["metadata"]["uid"], True)]
        assert adopted["metadata"]["uid"] == orphan["metadata"]["uid"]
        # A pod that stops matching the selector is released, and replaced.
        await api_client.patch(PODS, NS, "orphan", {"metadata": {"labels": {"app": "other"}}})
        await until(lambda: _released(api_client, "orphan"), what="released")
        await until(lambda: _n_pods(api_client, "web", 2, without="orphan"), what="replaced")


async def test_replicaset_reports_create_failures(api_client: Client) -> None:
    async with controllers(api_client):
        body = replicaset("web", 2)
        body["spec"]["template"]["spec"]["priorityClassName"] = "gold"  # does not exist yet
        await api_client.create(RS, body)

        async def failure() -> Obj:
            return condition(await api_client.get(RS, NS, "web"), "ReplicaFailure")

        cond = await until(failure, what="ReplicaFailure")
        assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
        assert "no PriorityClass with name gold was found" in cond["message"]
        assert await pods_of(api_client, "web") == []
        pcs = by_kind("scheduling.k8s.io", "PriorityClass")
        assert pcs is not None
        await api_client.create(pcs, {"apiVersion": "scheduling.k8s.io/v1",
                                      "kind": "PriorityClass", "metadata": {"name": "gold"},
                                      "value": 1000})
        await until(lambda: _n_pods(api_client, "web", 2), timeout=15, what="pods once fixed")
        await until(lambda: _no_failure(api_client), what="condition cleared")


async def _no_failure(client: Client) -> bool:
    return condition(await client.get(RS, NS, "web"), "ReplicaFailure") == {}


async def _released(client: Client, name: str) -> bool:
    return not (await client.get(PODS, NS, name))["metadata"].get("ownerReferences")


# -- Deployment --------------------------------------------------------------------------------


async def _deploy_status(client: Client, name: str, **want: Any) -> Obj | None:
    d = await client.get(DEPLOY, NS, name)
    st = d.get("status") or {}
    ok = all(st.get(k, 0) == v for k, v in want.items())
    return d if ok and st.get("observedGeneration") == d["metadata"]["generation"] else None


async def _replicasets(client: Client, app: str) -> list[Obj]:
    return (await client.list(RS, NS, label_selector=f"app={app}"))["items"]


async def test_rolling_update_bounds_status_history_and_undo(
        api_client: Client, server: ServerProcess) -> None:
    replicas, surge, unavailable = 4, 1, 1
    violations: list[str] = []
    events = 0
    watcher = Informer(api_client, PODS, namespace=NS, label_selector="app=web")

    def check(*_: Obj) -> None:
        nonlocal events
        if not watcher.has_synced():
            return  # the initial list fills the cache one pod at a time
        events += 1
        pods = [p for p in watcher.list() if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in pods if is_ready(p))
        if len(pods) > replicas + surge:
            violations.append(f"{len(pods)} pods")
        if ready < replicas - unavailable:
            violations.append(f"{ready} ready")

    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("ready")
        body = deployment("web", replicas, strategy={"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": surge, "maxUnavailable": unavailable}})
        body["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first"}
        await api_client.create(DEPLOY, body)
        result = await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        assert 'deployment "web" successfully rolled out' in result.stdout
        first = await _deploy_status(api_client, "web", availableReplicas=4, updatedReplicas=4)
        assert first is not None
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        (rs1,) = await _replicasets(api_client, "web")
        pod_hash = rs1["metadata"]["labels"]["pod-template-hash"]
        assert rs1["metadata"]["name"] == f"web-{pod_hash}"
        assert rs1["spec"]["selector"]["matchLabels"] == {"app": "web",
                                                          "pod-template-hash": pod_hash}
        assert rs1["metadata"]["annotations"]["kubernetes.io/change-cause"] == "first"
        assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "5"
        assert all(p["metadata"]["labels"]["pod-template-hash"] == pod_hash
                   for p in await pods_of(api_client, "web"))
        assert condition(first, "Available")["reason"] == "MinimumReplicasAvailable"
        assert condition(first, "Progressing")["reason"] == "NewReplicaSetAvailable"

        watcher.add_handlers(Handlers(check, check, check))
        watch_task = asyncio.create_task(watcher.run())
        await watcher.wait_synced()
        check()
        await kubectl(server, "set", "image", "deployment/web", "web=nginx:1.26")
        await kubectl(server, "annotate", "deployment/web",
                      "kubernetes.io/change-cause=second", "--overwrite")
        result = await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        assert "successfully rolled out" in result.stdout
        assert await until(lambda: _deploy_status(api_client, "web", replicas=4,
                                                  updatedReplicas=4, availableReplicas=4))
        images = {p["spec"]["containers"][0]["image"] for p in await pods_of(api_client, "web")}
        assert images == {"nginx:1.26"}
        await asyncio.sleep(0.2)
        watch_task.cancel()
        assert events > 10 and not violations, violations

        async def history() -> list[list[str]]:
            out = (await kubectl(server, "rollout", "history", "deployment/web")).stdout
            return [line.split() for line in out.splitlines()[2:] if line.strip()]

        want = [["1", "first"], ["2", "second"]]  # REVISION, CHANGE-CAUSE
        await until(lambda: _equals(history(), want), what="history with change causes")

        await kubectl(server, "rollout", "undo", "deployment/web")
        await until(lambda: _deploy_status(api_client, "web", updatedReplicas=4, replicas=4,
                                           availableReplicas=4), what="undo rolled out")
        undone = await api_client.get(DEPLOY, NS, "web")
        assert undone["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
        assert undone["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        back = await api_client.get(RS, NS, rs1["metadata"]["name"])
        assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
        assert back["spec"]["replicas"] == 4
        assert [row[0] for row in await history()] == ["2", "3"]


async def test_pause_resume_and_restart(api_client: Client, server: ServerProcess) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("ready")
        await api_client.create(DEPLOY, deployment("web", 2, revisionHistoryLimit=1))
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        await kubectl(server, "rollout", "pause", "deployment/web")
        await until(lambda: _progress_reason(api_client, "web", "DeploymentPaused"),
                    what="paused condition")
        await kubectl(server, "set", "image", "deployment/web", "web=nginx:1.26")
        await asyncio.sleep(0.5)
        assert len(await _replicasets(api_client, "web")) == 1  # no rollout while paused
        d = await api_client.get(DEPLOY, NS, "web")
        assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
        await kubectl(server, "rollout", "resume", "deployment/web")
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        images = {p["spec"]["containers"][0]["image"] for p in await pods_of(api_client, "web")}
        assert images == {"nginx:1.26"}
        # restart: a template annotation, hence a new ReplicaSet; history keeps only one old.
        await kubectl(server, "rollout", "restart", "deployment/web")
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        d = await api_client.get(DEPLOY, NS, "web")
        assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"][
            "annotations"]
        await until(lambda: _count_rs(api_client, "web", 2), what="history limit cleanup")
        revisions = sorted(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                           for rs in await _replicasets(api_client, "web"))
        assert revisions == ["2", "3"]


async def _count_rs(client: Client, app: str, n: int) -> bool:
    return len(await _replicasets(client, app)) == n


async def _progress_reason(client: Client, name: str, reason: str) -> bool:
    d = await client.get(DEPLOY, NS, name)
    return condition(d, "Progressing").get("reason") == reason


async def test_recreate_stops_old_pods_before_starting_new(
        api_client: Client, server: ServerProcess) -> None:
    overlap: list[int] = []
    watcher = Informer(api_client, PODS, namespace=NS, label_selector="app=web")

    def check(*_: Obj) -> None:
        images = {p["spec"]["containers"][0]["image"] for p in watcher.list()}
        if len(images) > 1:
            overlap.append(len(watcher.list()))

    async with controllers(api_client), FakeNode(api_client, node_name="node-1") as node:
        node.policy("ready")  # bound pods: deletions are graceful, finished by the fake node
        await api_client.create(DEPLOY, deployment("web", 3, strategy={"type": "Recreate"}))
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        watcher.add_handlers(Handlers(check, check, check))
        watch_task = asyncio.create_task(watcher.run())
        await watcher.wait_synced()
        await kubectl(server, "set", "image", "deployment/web", "web=nginx:1.26")
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        await until(lambda: _deploy_status(api_client, "web", replicas=3, availableReplicas=3,
                                           updatedReplicas=3), what="recreated")
        watch_task.cancel()
        assert not overlap
        pods = await pods_of(api_client, "web")
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:1.26"}


async def test_min_ready_seconds_delays_availability(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("ready")
        # 3 s: wide enough that a loaded machine still sees the ready-not-available window.
        await api_client.create(DEPLOY, deployment("web", 2, minReadySeconds=3))
        (rs,) = await until(lambda: _replicasets(api_client, "web"), what="replicaset")
        assert rs["spec"]["minReadySeconds"] == 3
        d = await until(lambda: _deploy_status(api_client, "web", readyReplicas=2),
                        what="ready")
        assert d["status"].get("availableReplicas", 0) == 0
        assert condition(d, "Available")["status"] == "False"
        d = await until(lambda: _deploy_status(api_client, "web", availableReplicas=2),
                        timeout=10, what="available after minReadySeconds")
        assert condition(d, "Available")["reason"] == "MinimumReplicasAvailable"


async def test_progress_deadline_exceeded(api_client: Client, server: ServerProcess) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("running")  # never Ready
        await api_client.create(DEPLOY, deployment("web", 2, progressDeadlineSeconds=2))
        d = await until(lambda: _progress_reason(api_client, "web", "ProgressDeadlineExceeded"),
                        timeout=10, what="deadline exceeded")
        assert d
        d = await api_client.get(DEPLOY, NS, "web")
        progressing = condition(d, "Progressing")
        assert progressing["status"] == "False"
        assert progressing["message"].startswith('ReplicaSet "web-')
        assert progressing["message"].endswith('" has timed out progressing.')
        assert condition(d, "Available") == {**condition(d, "Available"), "status": "False",
                                             "reason": "MinimumReplicasUnavailable"}
        assert d["status"]["unavailableReplicas"] == 2
        result = await kubectl(server, "rollout", "status", "deployment/web", "--timeout=10s",
                               check=False)
        assert result.returncode != 0
        assert 'deployment "web" exceeded its progress deadline' in result.stderr


async def test_scaling_mid_rollout_is_proportional(
        api_client: Client, server: ServerProcess) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("ready", {"app": "web"})
        body = deployment("web", 10, strategy={"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": 3, "maxUnavailable": 2}})
        await api_client.create(DEPLOY, body)
        await kubectl(server, "rollout", "status", "deployment/web", "--timeout=20s")
        (old,) = await _replicasets(api_client, "web")
        node.rules.clear()  # the new version never becomes ready: the rollout stalls
        node.policy("ready", {"pod-template-hash": old["metadata"]["labels"]["pod-template-hash"]})
        node.policy(None)
        await kubectl(server, "set", "image", "deployment/web", "web=nginx:1.26")
        # 10 + 3 surge: old scaled to 8 (2 unavailable allowed), new to 5.
        await until(lambda: _sizes(api_client, "web", {"nginx:1.25": 8, "nginx:1.26": 5}),
                    what="stalled rollout")
        await kubectl(server, "scale", "deployment/web", "--replicas=20")
        # 20 + 3 surge = 23 allowed, 10 more: each grows by 23/13 -> 14 and 9.
        await until(lambda: _sizes(api_client, "web", {"nginx:1.25": 14, "nginx:1.26": 9}),
                    what="proportional scale-up")
        for rs in await _replicasets(api_client, "web"):
            ann = rs["metadata"]["annotations"]
            assert ann["deployment.kubernetes.io/desired-replicas"] == "20"
            assert ann["deployment.kubernetes.io/max-replicas"] == "23"


async def _sizes(client: Client, app: str, want: dict[str, int]) -> bool:
    sizes = {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
             for rs in await _replicasets(client, app)}
    return sizes == want


# -- Job ---------------------------------------------------------------------------------------


async def _job_done(client: Client, name: str, type_: str) -> Obj | None:
    j = await client.get(JOBS, NS, name)
    return j if condition(j, type_).get("status") == "True" else None


async def test_job_completions_with_parallelism(api_client: Client) -> None:
    most_active = 0
    watcher = Informer(api_client, PODS, namespace=NS, label_selector="job-name=work")

    def check(*_: Obj) -> None:
        nonlocal most_active
        running = [p for p in watcher.list()
                   if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        most_active = max(most_active, len(running))

    watcher.add_handlers(Handlers(check, check, check))
    watch_task = asyncio.create_task(watcher.run())
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("succeed", delay=0.2)
        await api_client.create(JOBS, job("work", completions=3, parallelism=2))
        done = await until(lambda: _job_done(api_client, "work", "Complete"), what="complete")
        st = done["status"]
        assert (st["succeeded"], st["failed"], st["active"], st["ready"]) == (3, 0, 0, 0)
        assert st["startTime"] and st["completionTime"]
        assert [c["type"] for c in st["conditions"]] == ["SuccessCriteriaMet", "Complete"]
        assert condition(done, "Complete")["reason"] == "CompletionsReached"
        pods = (await api_client.list(PODS, NS, label_selector="job-name=work"))["items"]
        assert len(pods) == 3
        for pod in pods:
            assert pod["metadata"]["name"].startswith("work-")
            ref = pod["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["uid"], ref["controller"]) == (
                "Job", done["metadata"]["uid"], True)
    watch_task.cancel()
    assert most_active == 2


async def test_indexed_job(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("succeed", delay=0.1)
        await api_client.create(JOBS, job("idx", completions=3, parallelism=3,
                                          completionMode="Indexed"))
        done = await until(lambda: _job_done(api_client, "idx", "Complete"), what="complete")
        assert done["status"]["completedIndexes"] == "0-2"
        pods = (await api_client.list(PODS, NS, label_selector="job-name=idx"))["items"]
        by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
                    for p in pods}
        assert sorted(by_index) == ["0", "1", "2"]
        for index, pod in by_index.items():
            assert pod["metadata"]["name"].startswith(f"idx-{index}-")
            assert pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == index
            assert pod["spec"]["hostname"] == f"idx-{index}"
            env = pod["spec"]["containers"][0]["env"]
            assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath":
                "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} in env


async def test_job_backoff_limit(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("fail")
        await api_client.create(JOBS, job("crash", backoffLimit=2))
        failed = await until(lambda: _job_done(api_client, "crash", "Failed"), what="failed")
        st = failed["status"]
        assert st["failed"] == 3 and st["active"] == 0 and st.get("succeeded", 0) == 0
        assert [c["type"] for c in st["conditions"]] == ["FailureTarget", "Failed"]
        cond = condition(failed, "Failed")
        assert (cond["reason"], cond["message"]) == (
            "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        assert "completionTime" not in st
        await asyncio.sleep(0.3)
        pods = (await api_client.list(PODS, NS, label_selector="job-name=crash"))["items"]
        assert len(pods) == 3


async def test_job_active_deadline(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("running")
        await api_client.create(JOBS, job("slow", parallelism=2, completions=4,
                                          activeDeadlineSeconds=1))
        failed = await until(lambda: _job_done(api_client, "slow", "Failed"), timeout=10,
                             what="deadline")
        cond = condition(failed, "Failed")
        assert (cond["reason"], cond["message"]) == (
            "DeadlineExceeded", "Job was active longer than specified deadline")
        assert failed["status"]["active"] == 0
        assert failed["status"]["failed"] == 2
        pods = (await api_client.list(PODS, NS, label_selector="job-name=slow"))["items"]
        assert pods == []  # active pods deleted


async def test_job_suspend_and_resume(api_client: Client) -> None:
    async with controllers(api_client), FakeNode(api_client) as node:
        node.policy("running")
        await api_client.create(JOBS, job("later", parallelism=2, completions=2, suspend=True))
        await until(lambda: _suspended(api_client, "later", "True"), what="suspended")
        assert (await api_client.list(PODS, NS, label_selector="job-name=later"))["items"] == []
        await api_client.patch(JOBS, NS, "later", {"spec": {"suspend": False}})
        await until(lambda: _suspended(api_client, "later", "False"), what="resumed")
        await until(lambda: _active(api_client, "later", 2), what="2 active")
        await api_client.patch(JOBS, NS, "later", {"spec": {"suspend": True}})
        await until(lambda: _active(api_client, "later", 0), what="pods removed")


async def _suspended(client: Client, name: str, value: str) -> bool:
    return condition(await client.get(JOBS, NS, name), "Suspended").get("status") == value


async def _active(client: Client, name: str, n: int) -> bool:
    pods = (await client.list(PODS, NS, label_selector=f"job-name={name}"))["items"]
    j = await client.get(JOBS, NS, name)
    return len(pods) == n and (j.get("status") or {}).get("active", 0) == n


async def test_ttl_after_finished_deletes_the_job_and_its_pods(api_client: Client) -> None:
    async with controllers(api_client, gc=True), FakeNode(api_client) as node:
        node.policy("succeed")
        # A TTL long enough that the finished pods are still there when a loaded machine
        # gets to look at them.
        await api_client.create(JOBS, job("brief", ttlSecondsAfterFinished=3))
        await until(lambda: _job_done(api_client, "brief", "Complete"), what="complete")
        assert len((await api_client.list(PODS, NS, label_selector="job-name=brief"))["items"])

        async def gone() -> bool:
            try:
                await api_client.get(JOBS, NS, "brief")
            except ApiError as exc:
                return exc.code == 404
            return False

        # Foreground propagation (as Kubernetes): the pods go first, then the Job.
        await until(gone, timeout=15, what="job deleted after its TTL")
        assert (await api_client.list(PODS, NS, label_selector="job-name=brief"))["items"] == []
