"""Pure decisions of the garbage collector and the namespace controller."""

from __future__ import annotations

from dockyard.controllers.garbagecollector import Action, OwnerState, owner_info, plan
from dockyard.controllers.namespace import CONDITION_TYPES, ContentReport, update_conditions

S, D, W = OwnerState.SOLID, OwnerState.DANGLING, OwnerState.WAITING


def _plan(states: dict[str, OwnerState], *, deps: bool = False, cycle: bool = False,
          finalizers: tuple[str, ...] = ()) -> Action:
    refs = [{"uid": uid} for uid in states]
    return plan(refs, states, has_dependents=deps, dependent_deleting_dependents=cycle,
                existing_finalizers=finalizers)


def test_a_solid_owner_keeps_the_dependent_and_drops_dead_references() -> None:
    assert _plan({"a": S}) == Action("none")
    assert _plan({"a": S, "b": D}) == Action("unlink", uids=("b",))
    assert _plan({"a": S, "b": W, "c": D}) == Action("unlink", uids=("c", "b"))


def test_no_solid_owner_deletes_in_background_unless_a_finalizer_says_otherwise() -> None:
    assert _plan({"a": D}) == Action("delete", "Background")
    assert _plan({"a": D, "b": D}) == Action("delete", "Background")
    assert _plan({"a": D}, finalizers=("orphan",)) == Action("delete", "Orphan")
    assert _plan({"a": D}, finalizers=("foregroundDeletion",)) == Action("delete", "Foreground")


def test_a_waiting_owner_makes_dependents_with_dependents_go_in_the_foreground() -> None:
    assert _plan({"a": W}) == Action("delete", "Background")
    assert _plan({"a": W}, deps=True) == Action("delete", "Foreground")
    assert _plan({"a": W}, deps=True, cycle=True) == Action("delete", "Foreground",
                                                            unblock=True)


def test_unresolvable_references_never_delete() -> None:
    assert _plan({"a": D, "b": OwnerState.UNKNOWN}) == Action("none")
    assert _plan({"a": OwnerState.INVALID}) == Action("none")


def test_owner_kinds_resolve_by_group_and_kind() -> None:
    rs = owner_info({"apiVersion": "apps/v1", "kind": "ReplicaSet"})
    node = owner_info({"apiVersion": "v1", "kind": "Node"})
    assert rs is not None and rs.plural == "replicasets"
    assert node is not None and not node.namespaced
    assert owner_info({"apiVersion": "example.com/v1", "kind": "Widget"}) is None


def test_conditions_report_remaining_content_like_kubernetes() -> None:
    report = ContentReport(remaining={"pods.": 2, "configmaps.": 1},
                           finalizers={"example.com/hold": 1})
    conditions, changed = update_conditions([], report.failures(), "T1")
    by_type = {c["type"]: c for c in conditions}
    assert changed and [c["type"] for c in conditions] == list(CONDITION_TYPES)
    assert by_type["NamespaceContentRemaining"] == {
        "type": "NamespaceContentRemaining", "status": "True", "lastTransitionTime": "T1",
        "reason": "SomeResourcesRemain",
        "message": "Some resources are remaining: configmaps. has 1 resource instances, "
                   "pods. has 2 resource instances"}
    assert by_type["NamespaceFinalizersRemaining"]["message"] == \
        "Some finalizers are remaining: example.com/hold in 1 resource instances"
    assert by_type["NamespaceDeletionContentFailure"]["reason"] == "ContentDeleted"
    assert by_type["NamespaceDeletionDiscoveryFailure"]["status"] == "False"

    # Unchanged failures write nothing; a flip moves the transition time.
    again, changed = update_conditions(conditions, report.failures(), "T2")
    assert not changed and again == conditions
    done, changed = update_conditions(conditions, ContentReport().failures(), "T3")
    remaining = {c["type"]: c for c in done}["NamespaceContentRemaining"]
    assert changed and remaining["status"] == "False" and remaining["reason"] == "ContentRemoved"
    assert remaining["lastTransitionTime"] == "T3"
    discovery = {c["type"]: c for c in done}["NamespaceDeletionDiscoveryFailure"]
    assert discovery["lastTransitionTime"] == "T1"


def test_deletion_errors_become_the_content_failure_condition() -> None:
    report = ContentReport(errors=["secrets.: 500 InternalError: boom"])
    assert not report.done
    reason, message = report.failures()["NamespaceDeletionContentFailure"]
    assert reason == "ContentDeletionFailed"
    assert message == ("Failed to delete all resource types, 1 remaining: "
                       "secrets.: 500 InternalError: boom")
