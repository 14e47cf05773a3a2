"""Unit tests for kubelet/status.py: the pod status a node reports, case by case, with
Kubernetes' rules (getPhase, the conditions, container states and reasons, QoS)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.kubelet.status import Observed, get_phase, pod_status
from dockyard.runtime.cri import ContainerState, ContainerStatus

Obj = dict[str, Any]
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NOW = "2024-01-01T00:00:00Z"


def pod(containers: list[str] = ("app",), inits: list[str] = (), policy: str = "Always",
        **spec: Any) -> Obj:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": n, "image": "busybox"} for n in containers],
                     **({"initContainers": [{"name": n, "image": "busybox"} for n in inits]}
                        if inits else {}),
                     "restartPolicy": policy, **spec},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}}


def running(name: str, attempt: int = 0, cid: str = "") -> ContainerStatus:
    return ContainerStatus(id=cid or f"{name}-{attempt}", sandbox_id="sb", name=name,
                           attempt=attempt, state=ContainerState.RUNNING, image_ref="busybox",
                           image_id="sha256:abc", created_at=T0 + attempt,
                           started_at=T0 + attempt)


def exited(name: str, code: int, attempt: int = 0, reason: str = "") -> ContainerStatus:
    return ContainerStatus(id=f"{name}-{attempt}", sandbox_id="sb", name=name, attempt=attempt,
                           state=ContainerState.EXITED, image_ref="busybox",
                           image_id="sha256:abc", created_at=T0 + attempt,
                           started_at=T0 + attempt, finished_at=T0 + attempt + 1,
                           exit_code=code, reason=reason)


def status_of(p: Obj, *containers: ContainerStatus, **obs: Any) -> Obj:
    return pod_status(p, Observed(containers=containers, sandbox_ready=True,
                                  pod_ips=("10.42.0.5",), host_ip="192.0.2.1", now=NOW, **obs))


def conditions(status: Obj) -> dict[str, tuple[str, str | None]]:
    return {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}


@pytest.mark.parametrize(("policy", "containers", "phase"), [
    ("Always", [], "Pending"),
    ("Always", [running("app")], "Running"),
    ("Always", [exited("app", 1)], "Running"),  # restarting
    ("Always", [exited("app", 0)], "Running"),
    ("OnFailure", [exited("app", 0)], "Succeeded"),
    ("OnFailure", [exited("app", 1)], "Running"),
    ("Never", [exited("app", 0)], "Succeeded"),
    ("Never", [exited("app", 2)], "Failed"),
    ("Never", [running("app")], "Running"),
])
def test_phase_of_one_container(policy: str, containers: list[ContainerStatus],
                                phase: str) -> None:
    assert status_of(pod(policy=policy), *containers)["phase"] == phase


@pytest.mark.parametrize(("policy", "containers", "phase"), [
    ("Never", [exited("a", 0), running("b")], "Running"),
    ("Never", [exited("a", 0), exited("b", 0)], "Succeeded"),
    ("Never", [exited("a", 0), exited("b", 1)], "Failed"),
    ("Always", [running("a")], "Pending"),  # b has not been created yet
])
def test_phase_of_two_containers(policy: str, containers: list[ContainerStatus],
                                 phase: str) -> None:
    assert status_of(pod(["a", "b"], policy=policy), *containers)["phase"] == phase


def test_phase_with_init_containers() -> None:
    p = pod(inits=["i1", "i2"], policy="Never")
    assert status_of(p, running("i1"))["phase"] == "Pending"
    assert status_of(p, exited("i1", 0), running("i2"))["phase"] == "Pending"
    assert status_of(p, exited("i1", 1))["phase"] == "Failed"
    done = status_of(p, exited("i1", 0), exited("i2", 0), running("app"))
    assert done["phase"] == "Running"
    # Init failures are retried unless the policy is Never.
    assert status_of(pod(inits=["i1"]), exited("i1", 1))["phase"] == "Pending"


def test_terminal_pod_is_judged_by_exit_codes() -> None:
    """Deleted (terminal) pods end Succeeded or Failed whatever the restart policy."""
    p = pod()
    assert status_of(p, exited("app", 0), terminal=True)["phase"] == "Succeeded"
    assert status_of(p, exited("app", 143), terminal=True)["phase"] == "Failed"


def test_get_phase_counts_waiting_after_a_crash_as_stopped() -> None:
    statuses = [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1}}}]
    assert get_phase(pod(), [], statuses, False) == "Running"
    fresh = [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}},
              "lastState": {}}]
    assert get_phase(pod(), [], fresh, False) == "Pending"


def test_a_running_pod_has_all_conditions_and_ids() -> None:
    status = status_of(pod(), running("app", cid="abc123"))
    assert conditions(status) == {
        "PodReadyToStartContainers": ("True", None), "Initialized": ("True", None),
        "Ready": ("True", None), "ContainersReady": ("True", None),
        "PodScheduled": ("True", None)}
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    (app,) = status["containerStatuses"]
    assert app == {"name": "app", "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}},
                   "lastState": {}, "ready": True, "restartCount": 0, "image": "busybox",
                   "imageID": "sha256:abc", "containerID": "runc://abc123", "started": True}
    assert status["podIP"] == "10.42.0.5" and status["podIPs"] == [{"ip": "10.42.0.5"}]
    assert status["hostIP"] == "192.0.2.1" and status["hostIPs"] == [{"ip": "192.0.2.1"}]
    assert status["startTime"] == NOW
    assert status["qosClass"] == "BestEffort"


def test_pending_pod_waits_in_container_creating() -> None:
    status = pod_status(pod(["b", "a"]), Observed(now=NOW))
    assert [c["name"] for c in status["containerStatuses"]] == ["a", "b"]  # sorted by name
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert conditions(status)["PodReadyToStartContainers"] == ("False", None)
    assert conditions(status)["ContainersReady"] == ("False", "ContainersNotReady")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [b a]"  # spec order


def test_init_containers_shape_the_conditions() -> None:
    p = pod(inits=["i1", "i2"])
    status = status_of(p, running("i1"))
    init = next(c for c in status["conditions"] if c["type"] == "Initialized")
    assert (init["status"], init["reason"], init["message"]) == (
        "False", "ContainersNotInitialized", "containers with incomplete status: [i1 i2]")
    assert [s["name"] for s in status["initContainerStatuses"]] == ["i1", "i2"]  # spec order
    assert status["initContainerStatuses"][1]["state"] == {
        "waiting": {"reason": "PodInitializing"}}
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    done = status_of(p, exited("i1", 0), exited("i2", 0), running("app"))
    assert conditions(done)["Initialized"] == ("True", None)
    assert all(s["ready"] and s["state"]["terminated"]["reason"] == "Completed"
               for s in done["initContainerStatuses"])


def test_crash_loop_shows_waiting_reason_and_last_state() -> None:
    message = "back-off 10s restarting failed container=app pod=p_default(u1)"
    status = status_of(pod(), exited("app", 1, attempt=0), exited("app", 2, attempt=1),
                       waiting={"app": ("CrashLoopBackOff", message)})
    (app,) = status["containerStatuses"]
    assert app["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
    assert app["lastState"]["terminated"]["exitCode"] == 2  # the newest attempt's exit
    assert app["lastState"]["terminated"]["reason"] == "Error"
    assert app["restartCount"] == 1
    assert status["phase"] == "Running"


def test_running_container_shows_previous_attempt_as_last_state() -> None:
    status = status_of(pod(), exited("app", 137, attempt=0, reason="OOMKilled"),
                       running("app", attempt=1))
    (app,) = status["containerStatuses"]
    assert "running" in app["state"] and app["restartCount"] == 1
    assert app["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert app["lastState"]["terminated"]["exitCode"] == 137


def test_waiting_reason_is_not_shown_for_a_container_that_will_not_restart() -> None:
    status = status_of(pod(policy="Never"), exited("app", 1),
                       waiting={"app": ("CrashLoopBackOff", "x")})
    assert "terminated" in status["containerStatuses"][0]["state"]


def test_image_pull_failure_keeps_pod_pending() -> None:
    status = status_of(pod(), waiting={"app": ("ErrImageNeverPull", 'Container image "x" is '
                                                                    "not present")})
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"


def test_probes_decide_started_and_ready() -> None:
    c = running("app", cid="c1")
    not_started = status_of(pod(), c, probes={"c1": (False, False)})
    app = not_started["containerStatuses"][0]
    assert (app["started"], app["ready"]) == (False, False)
    assert conditions(not_started)["Ready"] == ("False", "ContainersNotReady")
    unready = status_of(pod(), c, probes={"c1": (True, False)})["containerStatuses"][0]
    assert (unready["started"], unready["ready"]) == (True, False)


def test_readiness_gates() -> None:
    p = pod(readinessGates=[{"conditionType": "example.com/lb"}])
    missing = status_of(p, running("app"))
    ready = next(c for c in missing["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    assert ready["message"] == ('corresponding condition of pod readiness gate "example.com/lb" '
                                "does not exist.")
    p["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"}]
    passed = status_of(p, running("app"))
    assert conditions(passed)["Ready"] == ("True", None)
    assert passed["conditions"][0] == {"type": "example.com/lb", "status": "True"}  # kept


def test_last_transition_time_is_kept_while_the_status_stays() -> None:
    first = status_of(pod(), running("app"))
    later = pod_status(pod(), Observed(containers=(running("app"),), sandbox_ready=True,
                                       now="2024-02-02T00:00:00Z"), first)
    assert later["conditions"] == first["conditions"]
    assert later["startTime"] == first["startTime"] == NOW
    crashed = pod_status(pod(), Observed(containers=(exited("app", 1),), sandbox_ready=True,
                                         now="2024-02-02T00:00:00Z"), first)
    times = {c["type"]: c["lastTransitionTime"] for c in crashed["conditions"]}
    assert times["Ready"] == "2024-02-02T00:00:00Z"
    assert times["PodScheduled"] == NOW


def test_succeeded_pod_conditions_say_completed() -> None:
    status = status_of(pod(policy="Never"), exited("app", 0))
    assert conditions(status)["Ready"] == ("False", "PodCompleted")
    assert conditions(status)["ContainersReady"] == ("False", "PodCompleted")
    failed = status_of(pod(policy="Never"), exited("app", 1))
    assert conditions(failed)["Ready"] == ("False", "PodFailed")


def test_terminal_phase_is_never_left() -> None:
    p = pod()
    p["status"]["phase"] = "Failed"
    assert status_of(p, running("app"))["phase"] == "Failed"
    previous = {"phase": "Succeeded", "conditions": []}
    assert pod_status(pod(), Observed(containers=(running("app"),), now=NOW),
                      previous)["phase"] == "Succeeded"


def test_failure_sets_phase_reason_and_message() -> None:
    status = status_of(pod(), running("app"), failure=(
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"))
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")


def test_terminated_state_is_kept_when_the_container_is_gone() -> None:
    before = status_of(pod(policy="Never"), exited("app", 3))
    after = pod_status(pod(policy="Never"), Observed(now=NOW), before)
    assert after["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert after["phase"] == "Failed"


def test_container_gone_while_running_counts_as_stopped() -> None:
    before = status_of(pod(), running("app"))
    after = pod_status(pod(), Observed(now=NOW), before)
    app = after["containerStatuses"][0]
    assert app["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert app["restartCount"] == 1
    assert after["phase"] == "Running"


@pytest.mark.parametrize(("resources", "qos"), [
    ({}, "BestEffort"),
    ({"requests": {"cpu": "100m"}}, "Burstable"),
    ({"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}},
     "Guaranteed"),
    ({"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "1",
                                                                 "memory": "64Mi"}},
     "Burstable"),
])
def test_qos_class(resources: Obj, qos: str) -> None:
    p = pod()
    p["spec"]["containers"][0]["resources"] = resources
    del p["status"]["qosClass"]
    assert status_of(p)["qosClass"] == qos


def test_host_network_pod_uses_host_ip() -> None:
    status = pod_status(pod(hostNetwork=True), Observed(containers=(running("app"),),
                                                        sandbox_ready=True, host_ip="192.0.2.1",
                                                        now=NOW))
    assert status["podIP"] == "192.0.2.1"
