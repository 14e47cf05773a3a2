"""Pure logic of the workload controllers: fenceposts, hashing, pod ranking, expectations,
proportional scaling, revisions, progress, Job indexes and back-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.controllers import deployment_util as du
from dockyard.controllers import job_util as ju
from dockyard.controllers.controller_utils import (
    Expectations,
    pod_from_template,
    rank_pods_for_deletion,
    rfc3339,
    slow_start_batch,
    sort_active_pods,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool = False,
        ready_since: float = 60, restarts: int = 0, created: float = 100,
        cost: int | None = None, index: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": ago(created)}
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    if index is not None:
        meta.setdefault("annotations", {})[ju.COMPLETION_INDEX] = str(index)
    conditions = [{"type": "Ready", "status": "True" if ready else "False",
                   "lastTransitionTime": ago(ready_since)}]
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def deploy(replicas: int = 10, surge: Any = "25%", unavailable: Any = "25%",
           **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": 1, "annotations": {}},
            "spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     **spec},
            "status": {}}


def rs(name: str, replicas: int, *, created: float = 100, max_replicas: int | None = None,
       available: int = 0, revision: int | None = None) -> dict[str, Any]:
    ann: dict[str, str] = {}
    if max_replicas is not None:
        ann[du.MAX_REPLICAS] = str(max_replicas)
    if revision is not None:
        ann[du.REVISION] = str(revision)
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": ago(created),
                         "annotations": ann},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "c", "image": name}]}}},
            "status": {"replicas": replicas, "availableReplicas": available}}


# -- fenceposts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "want"), [
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 10, (3, 2)),     # surge rounds up, unavailable rounds down
    ("25%", "25%", 1, (1, 0)),
    ("0%", "1%", 2, (0, 1)),        # 1% of 2 rounds down to 0: bumped to 1
    (0, 0, 3, (0, 1)),
    (2, "50%", 5, (2, 2)),
    ("100%", 0, 3, (3, 0)),
])
def test_resolve_fenceposts(surge: Any, unavailable: Any, replicas: int,
                            want: tuple[int, int]) -> None:
    assert du.resolve_fenceposts(surge, unavailable, replicas) == want


def test_max_surge_and_unavailable_of_deployments() -> None:
    assert (du.max_surge(deploy(10)), du.max_unavailable(deploy(10))) == (3, 2)
    assert du.max_unavailable(deploy(2, 0, 5)) == 2  # never more than replicas
    assert du.max_unavailable(deploy(0)) == 0
    recreate = deploy(4)
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    assert (du.max_surge(recreate), du.max_unavailable(recreate)) == (0, 0)
    with pytest.raises(ValueError, match="not a percentage"):
        du.scaled_value("5", 10, True)


# -- hashing ---------------------------------------------------------------------------------


def test_hash_is_stable_safe_and_sensitive() -> None:
    template = {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}
    reordered = {"spec": {"containers": [{"image": "nginx:1.25", "name": "web"}]},
                 "metadata": {"labels": {"tier": "fe", "app": "web"}, "annotations": {}}}
    h = du.compute_hash(template, None)
    assert h == du.compute_hash(reordered, None)  # key order and empty maps do not matter
    assert 1 <= len(h) <= 10 and set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert du.compute_hash(template, 1) != h
    changed = {**template, "spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}
    assert du.compute_hash(changed, None) != h


def test_fnv_and_safe_encode_match_go() -> None:
    assert du.fnv32a(b"") == 0x811C9DC5
    assert du.fnv32a(b"a") == 0xE40C292C
    assert du.fnv32a(b"foobar") == 0xBF9CF968
    assert du.safe_encode("123") == "567"
    assert du.safe_encode("0") == "4"


def test_equal_ignore_hash() -> None:
    a = {"metadata": {"labels": {"app": "web", du.POD_TEMPLATE_HASH: "abc"}},
         "spec": {"containers": [{"name": "c", "image": "x"}], "volumes": []}}
    b = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "c", "image": "x"}]}}
    assert du.equal_ignore_hash(a, b)
    b["spec"]["containers"][0]["image"] = "y"
    assert not du.equal_ignore_hash(a, b)


# -- pods --------------------------------------------------------------------------------------


def test_deletion_ranking_least_valuable_first() -> None:
    pods = [
        pod("ready-old", node="n1", ready=True, ready_since=3600, created=7200),
        pod("running-not-ready", node="n1"),
        pod("pending", node="n1", phase="Pending"),
        pod("unassigned", phase="Pending"),
        pod("unknown", node="n1", phase="Unknown"),
        pod("ready-new", node="n2", ready=True, ready_since=5, created=10),
    ]
    ranked = rank_pods_for_deletion(pods, [], at=NOW)
    assert names(ranked) == ["unassigned", "pending", "unknown", "running-not-ready",
                             "ready-new", "ready-old"]


def test_deletion_ranking_cost_colocation_restarts_age() -> None:
    cheap = pod("cheap", node="n1", ready=True, cost=-10)
    doubled = pod("doubled", node="n1", ready=True)
    alone = pod("alone", node="n2", ready=True)
    related = [doubled, cheap, pod("sibling", node="n1", ready=True), alone]
    assert names(rank_pods_for_deletion([alone, doubled, cheap], related, at=NOW)) == [
        "cheap", "doubled", "alone"]
    crashy = pod("crashy", node="n1", ready=True, restarts=5)
    steady = pod("steady", node="n1", ready=True)
    assert names(rank_pods_for_deletion([steady, crashy], [], at=NOW)) == ["crashy", "steady"]
    young = pod("young", node="n1", created=1)
    old = pod("old", node="n1", created=5000)
    assert names(rank_pods_for_deletion([old, young], [], at=NOW)) == ["young", "old"]
    # Logarithmic scale-down: ages in the same power of two tie, and the uid decides.
    a, b = pod("a", node="n1", created=3100), pod("b", node="n1", created=3000)
    assert names(rank_pods_for_deletion([b, a], [], at=NOW)) == ["a", "b"]
    assert names(sort_active_pods([a, b])) == ["b", "a"]  # Jobs' plain order: newer first


def test_pod_from_template() -> None:
    owner = {"metadata": {"name": "web", "namespace": "ns", "uid": "u"}}
    ref = {"kind": "ReplicaSet", "uid": "u", "controller": True}
    template = {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}
    made = pod_from_template(template, owner, ref)
    assert made["metadata"] == {"generateName": "web-", "namespace": "ns",
                                "labels": {"app": "web"}, "annotations": {"a": "1"},
                                "ownerReferences": [ref]}
    made["metadata"]["labels"]["x"] = "y"
    assert template["metadata"]["labels"] == {"app": "web"}  # a copy, not the template's map


def test_expectations() -> None:
    exp = Expectations()
    assert exp.satisfied("k")
    exp.expect_creations("k", 2)
    exp.creation_observed("k")
    assert not exp.satisfied("k")
    exp.creation_observed("k")
    assert exp.satisfied("k")
    exp.expect_deletions("k", ["ns/a", "ns/b"])
    exp.deletion_observed("k", "ns/a")
    exp.deletion_observed("k", "ns/a")  # the same pod seen twice counts once
    assert not exp.satisfied("k")
    exp.deletion_observed("k", "ns/b")
    assert exp.satisfied("k")
    expired = Expectations(timeout=-1)
    expired.expect_creations("k", 1)
    assert expired.satisfied("k")  # a lost event does not block the key forever


async def test_slow_start_batches() -> None:
    calls: list[int] = []

    async def ok() -> None:
        calls.append(1)

    assert await slow_start_batch(10, ok) == (10, None)
    assert len(calls) == 10
    attempts = 0

    async def fail_from_fourth() -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= 4:
            raise RuntimeError("quota")

    successes, error = await slow_start_batch(20, fail_from_fourth)
    # Batches of 1 and 2 succeed; the batch of 4 fails, and no batch follows it.
    assert (successes, str(error), attempts) == (3, "quota", 7)


# -- ReplicaSets, revisions, scaling -------------------------------------------------------------


def test_new_and_old_replicasets() -> None:
    d = deploy()
    d["spec"]["template"] = {"spec": {"containers": [{"name": "c", "image": "new"}]}}
    older, newer = rs("new", 1, created=50), rs("new", 0, created=10)
    newer["metadata"]["uid"] = "uid-newer"
    old = rs("old", 3)
    assert du.find_new_replicaset(d, [newer, old, older]) is older  # the oldest match
    required, everything = du.find_old_replicasets(d, [old, older, rs("older", 0)])
    assert names(required) == ["old"] and names(everything) == ["old", "older"]


def test_new_rs_replicas_respects_surge_and_status() -> None:
    d = deploy(4, 1, 1)
    new, old = rs("new", 0), rs("old", 4)
    assert du.new_rs_new_replicas(d, [old, new], new) == 1
    old["spec"]["replicas"] = 3  # scaled down, but its 4th pod is not gone yet
    new["spec"]["replicas"] = 1
    assert du.new_rs_new_replicas(d, [old, new], new) == 1
    old["status"]["replicas"] = 3
    assert du.new_rs_new_replicas(d, [old, new], new) == 2


def test_proportional_fractions() -> None:
    d = deploy(20, 3, 2)
    old = rs("old", 8, max_replicas=13)
    new = rs("new", 5, max_replicas=13)
    assert du.proportion(old, d, 10, 0) == 6  # round(8 * 23 / 13) - 8
    assert du.proportion(new, d, 10, 6) == 4
    assert du.proportion(new, d, 10, 10) == 0
    down = deploy(5, 3, 2)
    assert du.proportion(old, down, -5, 0) == -3  # round(8 * 8 / 13) - 8 = -3
    assert du.proportion(old, deploy(0), -13, 0) == -8


def test_revision_annotations_on_rollback() -> None:
    d = deploy()
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "undo",
                                    du.REVISION: "2", du.LAST_APPLIED: "{}"}
    target = rs("a", 0, revision=1)
    assert du.set_new_replicaset_annotations(d, target, 3, exists=True)
    ann = target["metadata"]["annotations"]
    assert ann[du.REVISION] == "3" and ann[du.REVISION_HISTORY] == "1"
    assert ann["kubernetes.io/change-cause"] == "undo" and du.LAST_APPLIED not in ann
    assert du.DESIRED_REPLICAS not in ann  # only new ReplicaSets get replica annotations
    fresh = rs("b", 0)
    du.set_new_replicaset_annotations(d, fresh, 4, exists=False)
    assert fresh["metadata"]["annotations"][du.DESIRED_REPLICAS] == "10"
    assert fresh["metadata"]["annotations"][du.MAX_REPLICAS] == "13"
    assert du.max_revision([target, fresh, rs("c", 0, revision=2)]) == 4


def test_progress_and_deadline() -> None:
    d = deploy(2, progressDeadlineSeconds=10)
    d["status"] = {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
                   "availableReplicas": 1}
    assert du.deployment_progressing(d, {**d["status"], "updatedReplicas": 2})
    assert not du.deployment_progressing(d, dict(d["status"]))
    cond = du.new_condition("Progressing", "True", du.REPLICASET_UPDATED, "m",
                            NOW - timedelta(seconds=11))
    status = {**d["status"], "conditions": [cond]}
    assert du.deployment_timed_out(d, status, NOW)
    assert not du.deployment_timed_out(d, status, NOW - timedelta(seconds=2))
    cond["reason"] = du.NEW_RS_AVAILABLE
    assert not du.deployment_timed_out(d, status, NOW)


def test_set_condition_keeps_transition_time() -> None:
    st: dict[str, Any] = {}
    first = du.new_condition("Progressing", "True", du.NEW_RS_CREATED, "a",
                             NOW - timedelta(seconds=30))
    du.set_condition(st, first)
    du.set_condition(st, du.new_condition("Progressing", "True", du.REPLICASET_UPDATED, "b",
                                          NOW))
    (cond,) = st["conditions"]
    assert cond["reason"] == du.REPLICASET_UPDATED
    assert cond["lastTransitionTime"] == first["lastTransitionTime"]
    assert cond["lastUpdateTime"] == rfc3339(NOW)


# -- Jobs --------------------------------------------------------------------------------------


def test_index_intervals() -> None:
    assert ju.format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7,8"
    assert ju.parse_indexes("0-2,5,7,8", 8) == {0, 1, 2, 5, 7}
    assert ju.format_indexes(set()) == ""
    active = [pod("a", index=0), pod("b", index=3)]
    assert ju.first_pending_indexes(active, {1}, 2, 5) == [2, 4]
    assert ju.index_generate_name("job", 3) == "job-3-"
    assert len(ju.index_generate_name("j" * 80, 12)) == ju.MAX_GENERATED_NAME_LENGTH


def test_duplicate_and_out_of_range_indexes_removed_first() -> None:
    job = {"spec": {"completionMode": "Indexed", "completions": 3}}
    dup_ready = pod("dup-ready", node="n", ready=True, index=1)
    dup_pending = pod("dup-pending", node="n", phase="Pending", index=1)
    out = pod("out", index=7)
    keep = pod("keep", index=0)
    assert names(ju.pods_for_removal(job, [keep, dup_ready, out, dup_pending], 0)) == [
        "dup-pending", "out"]


def test_backoff_from_pod_history() -> None:
    def finished(name: str, phase: str, seconds_ago: float) -> dict[str, Any]:
        p = pod(name, phase=phase)
        p["status"]["conditions"][0]["lastTransitionTime"] = ago(seconds_ago)
        return p

    assert ju.backoff_remaining([], NOW, 10, 600) == 0
    one = [finished("f1", "Failed", 4)]
    assert ju.backoff_remaining(one, NOW, 10, 600) == pytest.approx(6)
    three = one + [finished("f2", "Failed", 3), finished("f3", "Failed", 1)]
    assert ju.backoff_remaining(three, NOW, 10, 600) == pytest.approx(39)
    reset = three + [finished("ok", "Succeeded", 0)]
    assert ju.backoff_remaining(reset, NOW, 10, 600) == 0
    capped = [finished(f"f{i}", "Failed", 1) for i in range(12)]
    assert ju.backoff_remaining(capped, NOW, 10, 600) == pytest.approx(599)


def test_job_conditions() -> None:
    st: dict[str, Any] = {}
    assert not ju.ensure_condition(st, "Suspended", "False", "JobResumed", "Job resumed")
    assert "conditions" not in st
    assert ju.ensure_condition(st, "Suspended", "True", "JobSuspended", "Job suspended")
    assert not ju.ensure_condition(st, "Suspended", "True", "JobSuspended", "Job suspended")
    assert ju.ensure_condition(st, "Suspended", "False", "JobResumed", "Job resumed")
    assert [c["status"] for c in st["conditions"]] == ["False"]
    assert ju.is_finished({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert not ju.is_finished({"status": {"conditions": [
        {"type": "FailureTarget", "status": "True"}]}})


def test_pod_availability_needs_min_ready_seconds() -> None:
    from dockyard.controllers.controller_utils import is_pod_available

    ready = pod("p", ready=True, ready_since=5)
    assert is_pod_available(ready, 0, NOW)
    assert is_pod_available(ready, 3, NOW)
    assert not is_pod_available(ready, 10, NOW)
    assert not is_pod_available(pod("q", ready=False), 0, NOW)
