"""The namespace controller: empties a Terminating namespace, then releases its `kubernetes`
finalizer (Kubernetes' pkg/controller/namespace).

`sync(name)` confirms the deletion with a live GET, deletes every namespaced resource
(deletecollection, or one by one where that is not served), lists what remains, writes the
deletion conditions to the namespace's status, and once nothing remains PUTs
`namespaces/{name}/finalize` without `kubernetes`; the API server then deletes the namespace.
While content remains (pods still terminating on a node, objects held by finalizers) the
namespace is re-checked after a growing delay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import RESOURCES, ResourceInfo, by_kind
from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found

log = logging.getLogger("dockyard.namespace")

Obj = dict[str, Any]
NAMESPACES = by_kind("", "Namespace")
FINALIZER = "kubernetes"
_CONFLICT_RETRIES = 5

# The condition types the deleter maintains, in Kubernetes' order, with their "ok" variants
# (status False) from pkg/controller/namespace/deletion/status_condition_utils.go.
DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
GV_PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"
CONDITION_TYPES = (DISCOVERY_FAILURE, GV_PARSING_FAILURE, CONTENT_FAILURE, CONTENT_REMAINING,
                   FINALIZERS_REMAINING)
OK = {
    DISCOVERY_FAILURE: ("ResourcesDiscovered", "All resources successfully discovered"),
    GV_PARSING_FAILURE: ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    CONTENT_FAILURE: ("ContentDeleted",
                      "All content successfully deleted, may be waiting on finalization"),
    CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    FINALIZERS_REMAINING: ("ContentRemoved", "All content successfully removed"),
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def group_resource(info: ResourceInfo) -> str:
    """`pods.`, `deployments.apps`: how Kubernetes names a resource in these messages."""
    return f"{info.plural}.{info.group}"


@dataclass
class ContentReport:
    """What one deletion pass left behind."""

    remaining: dict[str, int] = field(default_factory=dict)  # group resource → count
    finalizers: dict[str, int] = field(default_factory=dict)  # finalizer → count
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not self.remaining and not self.errors

    def failures(self) -> dict[str, tuple[str, str]]:
        """The failing conditions (type → reason, message), as k8s' condition updater."""
        out: dict[str, tuple[str, str]] = {}
        if self.errors:
            out[CONTENT_FAILURE] = (
                "ContentDeletionFailed",
                f"Failed to delete all resource types, {len(self.errors)} remaining: "
                + ", ".join(sorted(self.errors)))
        if self.remaining:
            items = sorted(f"{gr} has {n} resource instances"
                           for gr, n in self.remaining.items() if n)
            out[CONTENT_REMAINING] = ("SomeResourcesRemain",
                                      "Some resources are remaining: " + ", ".join(items))
        if self.finalizers:
            items = sorted(f"{f} in {n} resource instances" for f, n in self.finalizers.items()
                           if n)
            out[FINALIZERS_REMAINING] = ("SomeFinalizerRemain",  # sic, as in k8s
                                         "Some finalizers are remaining: " + ", ".join(items))
        return out


def update_conditions(conditions: list[Obj], failures: dict[str, tuple[str, str]],
                      now: str) -> tuple[list[Obj], bool]:
    """The namespace's conditions with every deleter condition set to its failing or ok
    variant; the transition time moves only when the status flips (k8s' updateConditions)."""
    out = [dict(c) for c in conditions]
    changed = False
    for type_ in CONDITION_TYPES:
        status = "True" if type_ in failures else "False"
        reason, message = failures.get(type_) or OK[type_]
        old = next((c for c in out if c.get("type") == type_), None)
        if old is None:
            out.append({"type": type_, "status": status, "lastTransitionTime": now,
                        "reason": reason, "message": message})
            changed = True
        elif (old.get("status"), old.get("reason"), old.get("message")) != \
                (status, reason, message):
            if old.get("status") != status:
                old["lastTransitionTime"] = now
            old.update(status=status, reason=reason, message=message)
            changed = True
    return out, changed


class NamespaceController(Controller):
    """Deletes the content of Terminating namespaces and finalizes them."""

    name = "namespace"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 resources: Iterable[ResourceInfo] | None = None, workers: int = 4,
                 min_recheck_delay: float = 0.1, max_recheck_delay: float = 5.0) -> None:
        super().__init__()
        assert NAMESPACES is not None
        self.client = client
        self.recorder = recorder
        self.workers = workers
        self.resources = [r for r in (resources if resources is not None else RESOURCES)
                          if r.namespaced and "delete" in r.verbs]
        self._min_delay, self._max_delay = min_recheck_delay, max_recheck_delay
        self._passes: dict[str, int] = {}  # namespace → passes that left content behind
        self._namespaces = factory.informer(NAMESPACES)
        self._namespaces.add_handlers(Handlers(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new)))

    def informers(self) -> list[Informer]:
        return [self._namespaces]

    def _enqueue(self, ns: Obj) -> None:
        if ns["metadata"].get("deletionTimestamp"):
            self.queue.add(ns["metadata"]["name"])

    async def sync(self, key: str) -> None:
        assert NAMESPACES is not None
        cached = self._namespaces.get(key)
        if cached is None or not cached["metadata"].get("deletionTimestamp"):
            self._passes.pop(key, None)
            return
        try:  # act on the live object, never on a lagging cache
            ns = await self.client.get(NAMESPACES, None, key)
        except ApiError as exc:
            if is_not_found(exc):
                self._passes.pop(key, None)
                return
            raise
        if not ns["metadata"].get("deletionTimestamp") or \
                FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            self._passes.pop(key, None)
            return
        report = await self.delete_content(key)
        ns = await self._write_conditions(ns, report)
        if report.errors:
            raise RuntimeError(f"namespace {key}: " + "; ".join(report.errors))
        if not report.done:
            passes = self._passes.get(key, 0)
            self._passes[key] = passes + 1
            delay = min(self._max_delay, self._min_delay * 2 ** passes)
            log.debug("namespace %s: content remains %s; re-checking in %.1fs", key,
                      report.remaining, delay)
            self.queue.add_after(key, delay)
            return
        self._passes.pop(key, None)
        await self._finalize(ns)

    async def delete_content(self, namespace: str) -> ContentReport:
        """Delete every namespaced resource in `namespace`; report what is still there."""
        report = ContentReport()
        for info in self.resources:
            gr = group_resource(info)
            try:
                items = await self._delete_all_of(info, namespace)
            except ApiError as exc:
                report.errors.append(f"{gr}: {exc}")
                continue
            if items:
                report.remaining[gr] = len(items)
                for item in items:
                    for name in item["metadata"].get("finalizers") or []:
                        report.finalizers[name] = report.finalizers.get(name, 0) + 1
        return report

    async def _delete_all_of(self, info: ResourceInfo, namespace: str) -> list[Obj]:
        """Delete one resource's objects (Background propagation, as k8s' deleter); return
        the objects still listed afterwards."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1",
                   "propagationPolicy": "Background"}
        collection = "deletecollection" in info.verbs
        if collection:
            try:
                await self.client.request("DELETE", Client.path(info, namespace), body=options)
            except ApiError as exc:
                if exc.code not in (404, 405):
                    raise
                collection = False  # not served after all: one by one below
        listed = (await self.client.list(info, namespace)).get("items") or []
        if collection:
            return listed
        for item in listed:
            if item["metadata"].get("deletionTimestamp"):
                continue
            try:
                await self.client.delete(info, namespace, item["metadata"]["name"],
                                         propagation_policy="Background")
            except ApiError as exc:
                if exc.code not in (404, 405):
                    raise
        return (await self.client.list(info, namespace)).get("items") or []

    async def _write_conditions(self, ns: Obj, report: ContentReport) -> Obj:
        status = ns.get("status") or {}
        conditions, changed = update_conditions(list(status.get("conditions") or []),
                                                report.failures(), _now())
        if not changed:
            return ns
        assert NAMESPACES is not None
        wanted = {**ns, "status": {**status, "conditions": conditions}}
        try:
            return await self.client.update_status(NAMESPACES, wanted)
        except ApiError as exc:  # as k8s: a failed status write does not stop the deletion
            log.info("namespace %s: status not written: %s", ns["metadata"]["name"], exc)
            return ns

    async def _finalize(self, ns: Obj) -> None:
        """Remove `kubernetes` from spec.finalizers through the finalize subresource (a PUT
        guarded by resourceVersion); re-read and retry on conflict."""
        assert NAMESPACES is not None
        name, uid = ns["metadata"]["name"], ns["metadata"]["uid"]
        for _ in range(_CONFLICT_RETRIES):
            spec = ns.get("spec") or {}
            left = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
            if len(left) == len(spec.get("finalizers") or []):
                return
            try:
                await self.client.update(NAMESPACES, {**ns, "spec": {**spec, "finalizers": left}},
                                         sub="finalize")
                log.info("namespace %s: content deleted, finalized", name)
                return
            except ApiError as exc:
                if is_not_found(exc):
                    return
                if not is_conflict(exc):
                    raise
            try:
                ns = await self.client.get(NAMESPACES, None, name)
            except ApiError as exc:
                if is_not_found(exc):
                    return
                raise
            if ns["metadata"].get("uid") != uid:
                return
        raise RuntimeError(f"namespace {name}: finalize kept conflicting; retrying later")
