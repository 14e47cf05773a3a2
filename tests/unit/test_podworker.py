"""Unit tests of the pod lifecycle (kubelet/podworker.py, sync.py, statusmanager.py,
lifecycle.py): the pod workers run on the fake runtime, image store, network and volumes,
and talk to a real `dockyard server` through an informer, exactly as the agent wires them. The
tests read what a user reads: the pod's status through the API and the node's events."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client
from dockyard.kubelet.config import KubeletConfig
from dockyard.kubelet.context import AgentContext
from dockyard.kubelet.podworker import PodWorkers
from dockyard.runtime.cri import ContainerState, ExecResult, SandboxState
from tests.conftest import API_ONLY, ServerProcess
from tests.fakeruntime import (
    Behavior,
    FakeImages,
    FakeNetwork,
    FakeRecorder,
    FakeRuntime,
    FakeVolumes,
)

Obj = dict[str, Any]
PODS = by_kind("", "Pod")
CONFIGMAPS = by_kind("", "ConfigMap")
NAMESPACES = by_kind("", "Namespace")
NODE_IP = "192.0.2.10"
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 0.4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One API server for the module; every test uses its own node name and pods."""
    srv = ServerProcess(tmp_path_factory.mktemp("podworker") / "data",
                        extra_args=list(API_ONLY))
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


class Node:
    """One node agent's pod workers on fakes, fed by a pod informer like agent.py does."""

    def __init__(self, server: ServerProcess, tmp_path: Path, *, name: str = "",
                 after: Node | None = None) -> None:
        """`after`: a node agent that ran before on this machine (same runtime and network
        records), as when the agent process restarts."""
        self.name = name or (after.name if after else f"node-{uuid.uuid4().hex[:8]}")
        self.ns = self.name  # each node's pods in a namespace of their own
        self.kubeconfig = server.kubeconfig
        self.client = Client.from_kubeconfig(server.kubeconfig, user_agent="podworker-test")
        self.config = KubeletConfig(node_name=self.name, data_dir=tmp_path / "data",
                                    prefix="dyfake00", backoff_initial=BACKOFF_INITIAL,
                                    backoff_max=BACKOFF_MAX)
        self.runtime = after.runtime if after else FakeRuntime()
        self.images = FakeImages(pullable=("pullme",))
        self.network = after.network if after else FakeNetwork()
        self.volumes = FakeVolumes(tmp_path / "volumes")
        self.recorder = FakeRecorder()
        self.ctx = AgentContext(config=self.config, client=self.client, runtime=self.runtime,
                                images=self.images, network=self.network, volumes=self.volumes,
                                recorder=self.recorder,  # type: ignore[arg-type]
                                node_ip=NODE_IP)
        self.workers = PodWorkers(self.ctx)
        self.informer: Informer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert PODS is not None and NAMESPACES is not None
        try:
            await self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": self.ns}})
        except ApiError as exc:
            if exc.code != 409:
                raise
        await self.workers.start()
        self.informer = Informer(self.client, PODS, field_selector=f"spec.nodeName={self.name}")
        self.informer.add_handlers(Handlers(on_add=self.workers.update,
                                            on_update=lambda _o, n: self.workers.update(n),
                                            on_delete=self.workers.deleted))
        self._task = asyncio.create_task(self.informer.run())
        await self.informer.wait_synced()
        await self.workers.reconcile({p["metadata"]["uid"] for p in self.informer.list()})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.workers.stop()
        await self.client.close()

    # -- helpers ---------------------------------------------------------------------------

    async def create(self, name: str, containers: list[Obj], **spec: Any) -> Obj:
        assert PODS is not None
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {"nodeName": self.name, "containers": containers, **spec}}
        return await self.client.create(PODS, body)

    async def get(self, name: str) -> Obj:
        assert PODS is not None
        return await self.client.get(PODS, self.ns, name)

    async def wait(self, name: str, predicate: Callable[[Obj], bool],
                   timeout: float = 5.0) -> Obj:
        deadline = time.monotonic() + timeout
        pod: Obj = {}
        while time.monotonic() < deadline:
            try:
                pod = await self.get(name)
            except ApiError as exc:
                if exc.code != 404:
                    raise
                pod = {}
            if pod and predicate(pod):
                return pod
            await asyncio.sleep(0.02)
        raise AssertionError(f"pod {name} did not get there in {timeout}s; last seen: "
                             f"{pod.get('status')}")

    async def wait_gone(self, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self.get(name)
            except ApiError as exc:
                if exc.code == 404:
                    return
                raise
            await asyncio.sleep(0.02)
        raise AssertionError(f"pod {name} was not deleted")


@pytest.fixture
async def node(server: ServerProcess, tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(server, tmp_path)
    await n.start()
    yield n
    await n.stop()


def busybox(name: str, **kw: Any) -> Obj:
    return {"name": name, "image": "busybox", "command": ["sleep", "3600"], **kw}


def phase(value: str) -> Callable[[Obj], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") == value


def condition(pod: Obj, kind: str) -> Obj:
    return next(c for c in pod["status"].get("conditions") or [] if c["type"] == kind)


def is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def container_status(pod: Obj, name: str, init: bool = False) -> Obj:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((s for s in (pod.get("status") or {}).get(key) or [] if s["name"] == name),
                {})


def restarts(name: str, at_least: int) -> Callable[[Obj], bool]:
    return lambda pod: container_status(pod, name).get("restartCount", 0) >= at_least


def waiting_reason(pod: Obj, name: str, init: bool = False) -> str | None:
    state = container_status(pod, name, init).get("state") or {}
    return (state.get("waiting") or {}).get("reason")


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def calls(runtime: FakeRuntime, kind: str, name: str | None = None) -> list[tuple[Any, ...]]:
    return [c for c in runtime.calls if c[0] == kind and (name is None or c[1] == name)]


# -- starting --------------------------------------------------------------------------------


async def test_pod_goes_from_pending_to_running_with_events(node: Node) -> None:
    created = await node.create("web", [busybox("a"), busybox("b")])
    assert created["status"]["phase"] == "Pending"
    pod = await node.wait("web", lambda p: phase("Running")(p) and is_ready(p))
    status = pod["status"]
    uid = pod["metadata"]["uid"]
    assert status["podIP"] == "127.0.0.1" and status["podIPs"] == [{"ip": "127.0.0.1"}]
    assert status["hostIP"] == NODE_IP and status["hostIPs"] == [{"ip": NODE_IP}]
    assert status["qosClass"] == "BestEffort" and status["startTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
        "ContainersReady": "True", "PodScheduled": "True"}
    for name in ("a", "b"):
        cs = container_status(pod, name)
        (attempt,) = node.runtime.find(uid, name)
        assert cs["containerID"] == f"runc://{attempt.id}"
        assert cs["restartCount"] == 0 and cs["ready"] and cs["started"]
        assert cs["image"] == "busybox" and cs["imageID"].startswith("sha256:")
        assert set(cs["state"]) == {"running"}
    assert node.recorder.of("web") == [
        ("Normal", "Pulled", 'Container image "busybox" already present on machine'),
        ("Normal", "Created", "Created container a"),
        ("Normal", "Started", "Started container a"),
        ("Normal", "Pulled", 'Container image "busybox" already present on machine'),
        ("Normal", "Created", "Created container b"),
        ("Normal", "Started", "Started container b")]
    # The containers run in the pod's sandbox with its volumes; sandbox before containers.
    assert node.runtime.calls[0] == ("run_sandbox", "web")
    assert uid in node.volumes.set_up


async def test_status_is_written_only_when_it_changes(node: Node) -> None:
    await node.create("quiet", [busybox("a")])
    pod = await node.wait("quiet", is_ready)
    await asyncio.sleep(0.2)
    writes = node.workers.status.writes
    for _ in range(3):  # periodic resyncs of an unchanged pod
        node.workers.update(pod)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert node.workers.status.writes == writes
    assert (await node.get("quiet"))["metadata"]["resourceVersion"] == \
        pod["metadata"]["resourceVersion"]


# -- restarts --------------------------------------------------------------------------------


async def test_crash_loop_backs_off_doubling(node: Node) -> None:
    node.runtime.behaviors["c"] = Behavior(exit_code=1)
    created = await node.create("crash", [busybox("c")])
    uid = created["metadata"]["uid"]
    pod = await node.wait("crash", lambda p: restarts("c", 5)(p) and
                          waiting_reason(p, "c") == "CrashLoopBackOff")
    cs = container_status(pod, "c")
    message = cs["state"]["waiting"]["message"]
    assert re.fullmatch(rf"back-off \d+ms restarting failed container=c "
                        rf"pod=crash_{node.ns}\({uid}\)", message), message
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"  # Always: the pod is restarting, not done
    assert condition(pod, "Ready")["status"] == "False"
    # First restart at once, then 50 ms, 100 ms, 200 ms, 400 ms (the maximum), 400 ms.
    starts = [t for t, call in zip(_times(node), node.runtime.calls, strict=True)
              if call[0] == "start"]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    expected = [0.0, 0.05, 0.1, 0.2, 0.4]
    for gap, wanted in zip(gaps, expected, strict=False):
        assert gap >= wanted * 0.9, (gaps, expected)
    assert gaps[1] < gaps[3] < BACKOFF_MAX + 0.3, gaps
    assert ("Warning", "BackOff", f"Back-off restarting failed container c in pod "
            f"crash_{node.ns}({uid})") in node.recorder.of("crash")
    # Only the newest two attempts are kept (state and lastState / logs --previous).
    assert len(node.runtime.find(uid, "c")) <= 3


def _times(node: Node) -> list[float]:
    return node.runtime.call_times  # type: ignore[attr-defined]


@pytest.mark.parametrize(("policy", "code", "end", "restarted"), [
    ("Never", 1, "Failed", False),
    ("Never", 0, "Succeeded", False),
    ("OnFailure", 0, "Succeeded", False),
    ("Always", 0, "Running", True),
])
async def test_restart_policy(node: Node, policy: str, code: int, end: str,
                              restarted: bool) -> None:
    node.runtime.behaviors["c"] = Behavior(exit_code=code, run_for=0.05)
    created = await node.create("once", [busybox("c")], restartPolicy=policy)
    uid = created["metadata"]["uid"]
    if restarted:
        pod = await node.wait("once", restarts("c", 2))
    else:
        pod = await node.wait("once", phase(end))
        await asyncio.sleep(0.2)
        assert len(node.runtime.find(uid, "c")) == 1
        cs = container_status(await node.get("once"), "c")
        assert cs["state"]["terminated"]["exitCode"] == code
        assert cs["state"]["terminated"]["reason"] == ("Completed" if code == 0 else "Error")
        # Done: the sandbox is stopped, network and volumes released, the container (its
        # logs) and the status kept until the pod is deleted.
        sandbox = node.runtime.sandboxes[next(iter(node.runtime.sandboxes))]
        assert sandbox.state == SandboxState.NOTREADY
        assert uid in node.network.torn_down and uid in node.volumes.torn_down
        assert node.runtime.find(uid, "c")[0].state == ContainerState.EXITED
        assert (await node.get("once"))["status"]["podIP"] == "127.0.0.1"
    assert pod["status"]["phase"] == end


async def test_on_failure_restarts_until_success(node: Node) -> None:
    node.runtime.behaviors["c"] = Behavior(exit_code=3, run_for=0.02)
    await node.create("retry", [busybox("c")], restartPolicy="OnFailure")
    await node.wait("retry", restarts("c", 1))
    node.runtime.behaviors["c"] = Behavior(exit_code=0, run_for=0.02)
    pod = await node.wait("retry", phase("Succeeded"))
    cs = container_status(pod, "c")
    assert cs["restartCount"] >= 1 and cs["state"]["terminated"]["exitCode"] == 0
    assert cs["lastState"]["terminated"]["exitCode"] == 3


# -- init containers -------------------------------------------------------------------------


async def test_init_containers_run_first_and_in_order(node: Node) -> None:
    node.runtime.behaviors["init1"] = Behavior(exit_code=0, run_for=0.3)
    node.runtime.behaviors["init2"] = Behavior(exit_code=0, run_for=0.05)
    await node.create("inits", [busybox("app")], initContainers=[
        busybox("init1"), busybox("init2")])
    pending = await node.wait("inits", lambda p: "running" in container_status(
        p, "init1", True).get("state", {}))
    assert pending["status"]["phase"] == "Pending"
    initialized = condition(pending, "Initialized")
    assert (initialized["status"], initialized["reason"], initialized["message"]) == (
        "False", "ContainersNotInitialized", "containers with incomplete status: [init1 init2]")
    assert waiting_reason(pending, "app") == "PodInitializing"
    pod = await node.wait("inits", is_ready)
    order = [(c[0], c[1]) for c in node.runtime.calls if c[0] in ("start", "exited")]
    assert order == [("start", "init1"), ("exited", "init1"), ("start", "init2"),
                     ("exited", "init2"), ("start", "app")]
    for name in ("init1", "init2"):
        cs = container_status(pod, name, init=True)
        assert cs["state"]["terminated"]["reason"] == "Completed" and cs["ready"]
    assert condition(pod, "Initialized")["status"] == "True"


async def test_failed_init_container_fails_a_never_pod(node: Node) -> None:
    node.runtime.behaviors["init"] = Behavior(exit_code=2)
    created = await node.create("badinit", [busybox("app")], initContainers=[busybox("init")],
                                restartPolicy="Never")
    pod = await node.wait("badinit", phase("Failed"))
    assert container_status(pod, "init", True)["state"]["terminated"]["exitCode"] == 2
    await asyncio.sleep(0.1)
    assert node.runtime.find(created["metadata"]["uid"], "app") == []


async def test_failed_init_container_is_retried_with_back_off(node: Node) -> None:
    node.runtime.behaviors["init"] = Behavior(exit_code=1)
    created = await node.create("initloop", [busybox("app")], initContainers=[busybox("init")])
    pod = await node.wait("initloop", lambda p: container_status(p, "init", True).get(
        "restartCount", 0) >= 3)
    assert pod["status"]["phase"] == "Pending"
    assert waiting_reason(pod, "app") == "PodInitializing"
    assert node.runtime.find(created["metadata"]["uid"], "app") == []
    node.runtime.behaviors["init"] = Behavior(exit_code=0)
    await node.wait("initloop", is_ready)


# -- probes ----------------------------------------------------------------------------------


def exec_probe(word: str, **kw: Any) -> Obj:
    return {"exec": {"command": [word]}, "periodSeconds": 1, **kw}


def exec_results(node: Node, healthy: dict[str, bool]) -> None:
    def handler(name: str, argv: list[str]) -> ExecResult:
        if healthy.get(argv[0], True):
            return ExecResult(0, b"", b"")
        return ExecResult(1, f"{argv[0]} says no".encode(), b"")
    node.runtime.exec_handler = handler


async def test_liveness_failure_restarts_the_container(node: Node) -> None:
    healthy = {"alive": False}
    exec_results(node, healthy)
    created = await node.create("sick", [busybox("c", livenessProbe=exec_probe(
        "alive", failureThreshold=1))])
    uid = created["metadata"]["uid"]
    await node.wait("sick", restarts("c", 1))
    healthy["alive"] = True
    pod = await node.wait("sick", is_ready)
    cs = container_status(pod, "c")
    assert cs["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM
    events = node.recorder.of("sick")
    assert ("Warning", "Unhealthy", "Liveness probe failed: alive says no") in events
    assert ("Normal", "Killing", "Container c failed liveness probe, will be restarted") in events
    first = node.runtime.find(uid, "c")[0]
    assert first.state == ContainerState.EXITED and first.exit_code == 143


async def test_readiness_probe_gates_ready(node: Node) -> None:
    healthy = {"ready": False}
    exec_results(node, healthy)
    await node.create("gated", [busybox("c", readinessProbe=exec_probe("ready"))])
    pod = await node.wait("gated", lambda p: phase("Running")(p) and
                          any(call[0] == "exec" for call in node.runtime.calls))
    await asyncio.sleep(0.1)
    pod = await node.get("gated")
    ready = condition(pod, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ContainersNotReady", "containers with unready status: [c]")
    assert not container_status(pod, "c")["ready"]
    assert container_status(pod, "c")["started"]
    healthy["ready"] = True
    started = time.monotonic()
    pod = await node.wait("gated", is_ready, timeout=3)
    assert time.monotonic() - started < 1.5  # the next probe flips it, written at once
    assert container_status(pod, "c")["restartCount"] == 0


async def test_startup_probe_holds_liveness_back(node: Node) -> None:
    healthy = {"started": False, "alive": False}
    exec_results(node, healthy)
    await node.create("slowstart", [busybox("c", startupProbe=exec_probe(
        "started", failureThreshold=30), livenessProbe=exec_probe("alive",
                                                                  failureThreshold=1))])
    await node.wait("slowstart", lambda p: len(calls(node.runtime, "exec")) >= 2, timeout=4)
    pod = await node.get("slowstart")
    cs = container_status(pod, "c")
    assert (cs["started"], cs["ready"], cs["restartCount"]) == (False, False, 0)
    assert all(call[2] == ("started",) for call in calls(node.runtime, "exec"))
    healthy["started"] = True
    pod = await node.wait("slowstart", restarts("c", 1), timeout=5)
    assert ("alive",) in [call[2] for call in calls(node.runtime, "exec")]


# -- termination -----------------------------------------------------------------------------


async def test_graceful_deletion_runs_pre_stop_then_sigterm_then_deletes(node: Node) -> None:
    assert PODS is not None
    created = await node.create("bye", [busybox("c", lifecycle={
        "preStop": {"exec": {"command": ["drain"]}}})], terminationGracePeriodSeconds=20)
    uid = created["metadata"]["uid"]
    await node.wait("bye", is_ready)
    await node.client.delete(PODS, node.ns, "bye")
    await node.wait_gone("bye")
    sequence = [c for c in node.runtime.calls if c[0] in ("exec", "stop", "remove_sandbox")]
    assert sequence[0] == ("exec", "c", ("drain",))
    assert sequence[1][:2] == ("stop", "c") and 17 < sequence[1][2] <= 20
    assert sequence[2] == ("remove_sandbox", "bye")
    assert ("Normal", "Killing", "Stopping container c") in node.recorder.of("bye")
    assert node.runtime.containers == {} and node.runtime.sandboxes == {}
    assert uid in node.network.torn_down and uid in node.volumes.torn_down
    assert not (node.config.pods_dir / uid).exists()
    await eventually(lambda: uid not in node.workers.known_uids())


async def test_sigkill_after_the_grace_period(node: Node) -> None:
    assert PODS is not None
    node.runtime.behaviors["stubborn"] = Behavior(ignore_sigterm=True)
    await node.create("stuck", [busybox("stubborn")], terminationGracePeriodSeconds=1)
    await node.wait("stuck", is_ready)
    started = time.monotonic()
    await node.client.delete(PODS, node.ns, "stuck")
    await node.wait_gone("stuck", timeout=6)
    # The grace period (1 s) is raised to the 2 s minimum; SIGKILL after it.
    assert calls(node.runtime, "stop", "stubborn")[0][2] == 2.0
    assert calls(node.runtime, "sigkill", "stubborn")
    assert time.monotonic() - started >= 2.0


async def test_object_gone_kills_at_once(node: Node) -> None:
    assert PODS is not None
    created = await node.create("forced", [busybox("c", lifecycle={
        "preStop": {"exec": {"command": ["drain"]}}})])
    uid = created["metadata"]["uid"]
    await node.wait("forced", is_ready)
    await node.client.delete(PODS, node.ns, "forced", grace_period_seconds=0)
    await eventually(lambda: uid not in node.workers.known_uids())
    assert node.runtime.containers == {} and node.runtime.sandboxes == {}
    assert calls(node.runtime, "exec") == []  # no preStop: the object is gone
    assert uid in node.network.torn_down


# -- adoption --------------------------------------------------------------------------------


async def test_restarted_agent_adopts_without_restarting(server: ServerProcess,
                                                         tmp_path: Path) -> None:
    first = Node(server, tmp_path)
    await first.start()
    first.runtime.behaviors["c"] = Behavior(exit_code=1, run_for=0.02, attempts=1)
    try:
        created = await first.create("kept", [busybox("c")])
        uid = created["metadata"]["uid"]
        pod = await first.wait("kept", lambda p: is_ready(p) and restarts("c", 1)(p))
        assert container_status(pod, "c")["restartCount"] == 1
    finally:
        await first.stop()
    running = first.runtime.running(uid)
    assert len(running) == 1
    before_calls = len(first.runtime.calls)

    second = Node(server, tmp_path, after=first)
    await second.start()
    try:
        await asyncio.sleep(0.5)
        after = await second.get("kept")
        assert container_status(after, "c")["restartCount"] == \
            container_status(pod, "c")["restartCount"]
        assert container_status(after, "c")["containerID"] == f"runc://{running[0].id}"
        assert is_ready(after)
        new_calls = first.runtime.calls[before_calls:]
        assert not [c for c in new_calls if c[0] in ("create", "start", "stop",
                                                      "run_sandbox")], new_calls
        assert second.workers.status.writes == 0  # nothing changed: nothing written
        assert uid in second.workers.known_uids()
    finally:
        await second.stop()


async def test_pods_gone_while_the_agent_was_down_are_removed(server: ServerProcess,
                                                              tmp_path: Path) -> None:
    assert PODS is not None
    first = Node(server, tmp_path)
    await first.start()
    try:
        await first.create("orphan", [busybox("c")])
        await first.wait("orphan", is_ready)
    finally:
        await first.stop()
    client = Client.from_kubeconfig(server.kubeconfig)
    try:
        await client.delete(PODS, first.ns, "orphan", grace_period_seconds=0)
    finally:
        await client.close()
    second = Node(server, tmp_path, after=first)
    await second.start()
    try:
        await eventually(lambda: second.workers.known_uids() == set())
        assert first.runtime.sandboxes == {} and first.runtime.containers == {}
    finally:
        await second.stop()


# -- failures users must be told about -------------------------------------------------------


async def test_image_never_pull_and_pull_back_off(node: Node) -> None:
    await node.create("noimage", [{"name": "c", "image": "absent", "imagePullPolicy": "Never"}])
    pod = await node.wait("noimage", lambda p: waiting_reason(p, "c") == "ErrImageNeverPull")
    assert container_status(pod, "c")["state"]["waiting"]["message"] == \
        'Container image "absent" is not present with pull policy of Never'
    assert pod["status"]["phase"] == "Pending"
    assert ("Warning", "ErrImageNeverPull", 'Container image "absent" is not present with '
            "pull policy of Never") in node.recorder.of("noimage")

    await node.create("badpull", [{"name": "c", "image": "nowhere"}])
    pod = await node.wait("badpull", lambda p: waiting_reason(p, "c") == "ImagePullBackOff")
    assert container_status(pod, "c")["state"]["waiting"]["message"] == \
        'Back-off pulling image "nowhere"'
    events = node.recorder.of("badpull")
    assert ("Warning", "Failed", 'Failed to pull image "nowhere": image nowhere is not known '
            "to this node") in events
    assert ("Warning", "Failed", "Error: ErrImagePull") in events
    assert ("Normal", "BackOff", 'Back-off pulling image "nowhere"') in events

    await node.create("pulled", [{"name": "c", "image": "pullme", "command": ["sleep"]}])
    await node.wait("pulled", is_ready)
    reasons = node.recorder.of("pulled")
    assert reasons[0] == ("Normal", "Pulling", 'Pulling image "pullme"')
    assert reasons[1][1] == "Pulled" and reasons[1][2].startswith(
        'Successfully pulled image "pullme" in ')


async def test_missing_config_map_is_a_config_error_until_created(node: Node) -> None:
    assert CONFIGMAPS is not None
    name = f"cfg-{uuid.uuid4().hex[:6]}"
    await node.create("needscfg", [busybox("c", envFrom=[{"configMapRef": {"name": name}}])])
    pod = await node.wait("needscfg", lambda p: waiting_reason(
        p, "c") == "CreateContainerConfigError")
    assert container_status(pod, "c")["state"]["waiting"]["message"] == \
        f'configmap "{name}" not found'
    assert ("Warning", "Failed", f'Error: configmap "{name}" not found') in \
        node.recorder.of("needscfg")
    await node.client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": name, "namespace": node.ns},
                                          "data": {"MODE": "on"}})
    await node.wait("needscfg", is_ready)  # retried after the start back-off
    (attempt,) = node.runtime.find((await node.get("needscfg"))["metadata"]["uid"], "c")
    assert "MODE=on" in attempt.config.env


async def test_runtime_failures_become_waiting_reasons(node: Node) -> None:
    node.runtime.fail_create["c"] = "no space left on device"
    await node.create("nocreate", [busybox("c")])
    pod = await node.wait("nocreate", lambda p: waiting_reason(p, "c") == "CreateContainerError")
    assert container_status(pod, "c")["state"]["waiting"]["message"] == \
        "no space left on device"
    del node.runtime.fail_create["c"]
    node.runtime.fail_start["d"] = 'exec: "nope": executable file not found in $PATH'
    await node.create("nostart", [busybox("d")])
    pod = await node.wait("nostart", lambda p: waiting_reason(p, "d") == "RunContainerError")
    del node.runtime.fail_start["d"]
    await node.wait("nocreate", is_ready)
    await node.wait("nostart", is_ready)


async def test_failed_mount_is_reported_and_retried(node: Node) -> None:
    node.volumes.fail = 'MountVolume.SetUp failed for volume "data" : no such thing'
    await node.create("nomount", [busybox("c")])
    pod = await node.wait("nomount", lambda p: "FailedMount" in node.recorder.reasons(
        "nomount") and waiting_reason(p, "c") == "ContainerCreating")
    assert pod["status"]["phase"] == "Pending"
    assert ("Warning", "FailedMount", node.volumes.fail) in node.recorder.of("nomount")
    node.volumes.fail = ""
    await node.wait("nomount", is_ready)


async def test_dead_sandbox_is_recreated(node: Node) -> None:
    created = await node.create("phoenix", [busybox("c")])
    uid = created["metadata"]["uid"]
    await node.wait("phoenix", is_ready)
    node.runtime.kill_sandbox(uid)
    node.workers.update(await node.get("phoenix"))  # the periodic resync notices
    pod = await node.wait("phoenix", lambda p: is_ready(p) and restarts("c", 1)(p))
    assert ("Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and "
            "re-created.") in node.recorder.of("phoenix")
    assert container_status(pod, "c")["restartCount"] == 1


async def test_active_deadline_fails_the_pod(node: Node) -> None:
    await node.create("deadline", [busybox("c")], activeDeadlineSeconds=1)
    pod = await node.wait("deadline", phase("Failed"), timeout=4)
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert pod["status"]["message"] == \
        "Pod was active on the node longer than the specified deadline"
    assert node.runtime.running() == []


async def test_post_start_hook_failure_kills_the_container(node: Node) -> None:
    healthy = {"hook": False}
    exec_results(node, healthy)
    await node.create("hooked", [busybox("c", lifecycle={
        "postStart": {"exec": {"command": ["hook"]}}})])
    await node.wait("hooked", restarts("c", 1))
    events = node.recorder.of("hooked")
    assert any(reason == "FailedPostStartHook" and message.startswith(
        f'Exec lifecycle hook ([hook]) for Container "c" in Pod "hooked_{node.ns}(')
        for _, reason, message in events), events
    healthy["hook"] = True
    await node.wait("hooked", is_ready)


async def test_deleting_a_pod_stuck_pulling_does_not_wait_for_the_pull(node: Node) -> None:
    assert PODS is not None
    node.images.pull_seconds = 30
    await node.create("slowpull", [{"name": "c", "image": "pullme"}])
    await node.wait("slowpull", lambda p: "Pulling" in node.recorder.reasons("slowpull") and
                    waiting_reason(p, "c") == "ContainerCreating")
    started = time.monotonic()
    await node.client.delete(PODS, node.ns, "slowpull")
    await node.wait_gone("slowpull")
    assert time.monotonic() - started < 3
    assert node.runtime.sandboxes == {}


async def test_image_change_restarts_the_container(node: Node) -> None:
    assert PODS is not None
    await node.create("upgrade", [busybox("c")])
    pod = await node.wait("upgrade", is_ready)
    await node.client.patch(PODS, node.ns, "upgrade", {"spec": {"containers": [
        {"name": "c", "image": "pullme"}]}}, patch_type="strategic")
    pod = await node.wait("upgrade", lambda p: container_status(p, "c").get(
        "image") == "pullme" and is_ready(p))
    assert container_status(pod, "c")["restartCount"] == 1
    assert ("Normal", "Killing", "Container c definition changed, will be restarted") in \
        node.recorder.of("upgrade")


async def test_readiness_gate_set_by_another_component(node: Node) -> None:
    assert PODS is not None
    gate = "example.com/load-balancer"
    await node.create("lb", [busybox("c")], readinessGates=[{"conditionType": gate}])
    pod = await node.wait("lb", lambda p: phase("Running")(p) and condition(
        p, "ContainersReady")["status"] == "True")
    ready = condition(pod, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    await node.client.patch(PODS, node.ns, "lb", {"status": {"conditions": [
        {"type": gate, "status": "True"}]}}, patch_type="strategic", sub="status")
    pod = await node.wait("lb", is_ready)
    assert condition(pod, gate)["status"] == "True"  # the node kept the other's condition


async def test_restart_count_survives_a_runtime_that_lost_its_records(
        server: ServerProcess, tmp_path: Path) -> None:
    first = Node(server, tmp_path)
    await first.start()
    try:
        created = await first.create("amnesia", [busybox("c")])
        uid = created["metadata"]["uid"]
        await first.wait("amnesia", is_ready)
    finally:
        await first.stop()
    await first.runtime.cleanup_all()  # e.g. a reboot: no containers, no records
    second = Node(server, tmp_path, after=first)
    await second.start()
    try:
        pod = await second.wait("amnesia", lambda p: is_ready(p) and restarts("c", 1)(p))
        assert container_status(pod, "c")["restartCount"] == 1  # after 0.log: attempt 1
        assert [c.config.attempt for c in second.runtime.find(uid, "c")] == [1]
    finally:
        await second.stop()


# -- the status manager on its own -----------------------------------------------------------


async def test_status_manager_conflicts_merges_and_preconditions(node: Node) -> None:
    from dockyard.kubelet.statusmanager import StatusManager

    assert PODS is not None
    await node.stop()  # this test writes the statuses itself, with a client of its own
    client = node.client = Client.from_kubeconfig(node.kubeconfig)
    manager = StatusManager(client)
    try:
        pod = await node.create("manual", [busybox("c")])
        manager.observe(pod)
        # Another component writes a condition: the manager's resourceVersion is now stale.
        await client.patch(PODS, node.ns, "manual", {"status": {"conditions": [
            {"type": "example.com/gate", "status": "True"}]}}, patch_type="strategic",
            sub="status")
        ours = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        manager.set(pod, ours)
        await manager.flush(pod["metadata"]["uid"])
        stored = (await node.get("manual"))["status"]
        assert stored["phase"] == "Running"
        assert {c["type"] for c in stored["conditions"]} == {"example.com/gate", "Ready"}
        assert manager.writes == 1
        # A terminal phase stays terminal, whatever is written later.
        manager.set(pod, {**ours, "phase": "Failed", "reason": "DeadlineExceeded"})
        await manager.flush(pod["metadata"]["uid"])
        manager.set(pod, ours)
        await manager.flush(pod["metadata"]["uid"])
        stored = (await node.get("manual"))["status"]
        assert (stored["phase"], stored["reason"]) == ("Failed", "DeadlineExceeded")
        # The final delete names the uid: a new pod of the same name is left alone.
        await client.delete(PODS, node.ns, "manual", grace_period_seconds=0)
        again = await node.create("manual", [busybox("c")])
        await manager.finish(pod, None)
        assert (await node.get("manual"))["metadata"]["uid"] == again["metadata"]["uid"]
        await manager.finish(again, None)
        await node.wait_gone("manual")
    finally:
        await client.close()

