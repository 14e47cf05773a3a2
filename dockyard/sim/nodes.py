"""Simulated nodes (kwok/kubemark style): Node objects and a fake kubelet, without containers.

One `SimulatedNodes` registers N nodes and plays their kubelets through the API only: per
node a Lease renewed every `heartbeat_seconds` and a status posted when it changed or every
`status_report_seconds` (as the kubelet does), both from one delayed work queue drained by a
bounded pool; one pod informer (bound pods, indexed by node) feeds a second queue whose
workers mark pods Running and Ready at once and finish their graceful deletion. A stopped
node simply goes silent, so the node lifecycle controller sees it die.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from dockyard.api.quantity import QuantityError, parse_quantity
from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer, by_node, object_key, split_key
from dockyard.client.nodelease import LEASE_NAMESPACE, LEASES, renew_node_lease
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found
from dockyard.client.workqueue import WorkQueue
from dockyard.sim import objects
from dockyard.sim.objects import PodIPs

log = logging.getLogger("dockyard.sim")

NODES = by_kind("", "Node")
PODS = by_kind("", "Pod")
Obj = dict[str, Any]


class SimulatedNodes:
    def __init__(self, client: Client, *, count: int, name_prefix: str = "sim-node",
                 first_index: int = 0, zones: int = 1, cpu: str = "8", memory: str = "32Gi",
                 pods: str = "110", heartbeat_seconds: float = 10.0,
                 status_report_seconds: float = 300.0, lease_duration_seconds: int = 40,
                 labels: dict[str, str] | None = None, remove_nodes_on_exit: bool = False,
                 concurrency: int = 8, pod_workers: int = 8) -> None:
        if count < 0 or zones < 1:
            raise ValueError("count must be >= 0 and zones >= 1")
        assert NODES is not None and PODS is not None and LEASES is not None
        self.client = client
        self.names = [f"{name_prefix}-{i}" for i in range(first_index, first_index + count)]
        self._index = {name: first_index + n for n, name in enumerate(self.names)}
        self.zones, self.cpu, self.memory, self.max_pods = zones, cpu, memory, pods
        self.heartbeat = heartbeat_seconds
        self.report = status_report_seconds
        self.lease_duration = lease_duration_seconds
        self.labels = labels
        self.remove_nodes_on_exit = remove_nodes_on_exit
        self.concurrency = concurrency
        self.pod_workers = pod_workers
        self._alive: set[str] = set()
        self._ips = {name: PodIPs(objects.pod_cidr(i, int(pods)))
                     for name, i in self._index.items()}
        self._host_ip = {name: objects.node_ip(i) for name, i in self._index.items()}
        self._node_uid: dict[str, str] = {}
        self._leases: dict[str, Obj] = {}
        self._last_report: dict[str, float] = {}
        self._pod_slot: dict[str, tuple[str, str]] = {}  # pod key -> (node, uid) holding an IP
        self._beats = WorkQueue()
        self._pods_queue = WorkQueue()
        self.nodes = Informer(client, NODES, label_selector="=".join(objects.SIM_LABEL))
        self.pods = Informer(client, PODS, field_selector="spec.nodeName!=",
                             indexers={"by_node": by_node})
        self.pods.add_handlers(Handlers(on_add=self._pod_event,
                                        on_update=lambda _old, new: self._pod_event(new),
                                        on_delete=lambda pod: self._pods_queue.add(
                                            object_key(pod))))
        self._stop = asyncio.Event()
        self._registered = asyncio.Event()
        self.stats = {"lease_renewals": 0, "status_posts": 0, "pods_started": 0,
                      "pods_deleted": 0}

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """End `run()`: heartbeats stop (and nodes are removed if asked)."""
        self._stop.set()

    def stop_node(self, name: str) -> None:
        """Make one node go silent, as if its machine died: no lease, status or pod updates."""
        self._alive.discard(name)

    def start_node(self, name: str) -> None:
        """Bring a stopped node back: it heartbeats and reconciles its pods again."""
        if name in self._index and name not in self._alive:
            self._alive.add(name)
            self._beats.add(name)
            for pod in self.pods.by_index("by_node", name):
                self._pods_queue.add(object_key(pod))

    async def wait_registered(self) -> None:
        await self._registered.wait()

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Register the nodes, then heartbeat and run their pods until `stop()` or cancel."""
        informers = [asyncio.create_task(i.run(), name=f"sim-informer-{i.info.plural}")
                     for i in (self.nodes, self.pods)]
        workers: list[asyncio.Task[None]] = []
        try:
            started = time.monotonic()
            await self._bounded(self._register_retrying, self.names)
            await asyncio.gather(self.nodes.wait_synced(), self.pods.wait_synced())
            log.info("registered %d simulated nodes in %.1fs", len(self.names),
                     time.monotonic() - started)
            self._alive.update(self.names)
            for pod in self.pods.list():
                self._claim_existing_ip(pod)
                self._pod_event(pod)
            spread = self.heartbeat / max(1, len(self.names))
            for n, name in enumerate(self.names):  # spread renewals over one period
                self._beats.add_after(name, (n + 1) * spread)
            workers = [asyncio.create_task(self._drain(self._beats, self._beat), name="sim-beat")
                       for _ in range(self.concurrency)]
            workers += [asyncio.create_task(self._drain(self._pods_queue, self._sync_pod),
                                            name="sim-pods") for _ in range(self.pod_workers)]
            self._registered.set()
            await self._stop.wait()
        finally:
            self._alive.clear()
            await self._beats.shut_down()
            await self._pods_queue.shut_down()
            for task in workers + informers:
                task.cancel()
            await asyncio.gather(*workers, *informers, return_exceptions=True)
            if self.remove_nodes_on_exit:
                await self._bounded(self._remove, self.names)

    async def _bounded(self, fn: Callable[[str], Awaitable[None]], names: Iterable[str]) -> None:
        pending = iter(names)

        async def worker() -> None:
            for name in pending:
                await fn(name)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    @staticmethod
    async def _drain(queue: WorkQueue, fn: Callable[[str], Awaitable[None]]) -> None:
        while (key := await queue.get()) is not None:
            try:
                await fn(key)
            except (ApiError, OSError) as exc:
                log.debug("sim: %s failed: %s", key, exc)
                queue.add_rate_limited(key)
            except Exception:  # noqa: BLE001 - one bad object must not stop the simulation
                log.exception("sim: %s failed", key)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    # -- nodes -----------------------------------------------------------------------------

    async def _register_retrying(self, name: str) -> None:
        """The kubelet keeps trying to register until the API server lets it."""
        delay = 0.1
        while True:
            try:
                await self._register(name)
                return
            except (ApiError, OSError) as exc:
                if isinstance(exc, ApiError) and 400 <= exc.code < 500 and exc.code != 429:
                    raise  # the node itself is refused (a bad quantity, say): say so
                log.warning("sim: registering node %s failed (retry in %.1fs): %s", name, delay,
                            exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _register(self, name: str) -> None:
        """registerWithAPIServer: create the Node, or adopt the existing one."""
        assert NODES is not None
        body = objects.node_object(name, self._index[name], zones=self.zones, cpu=self.cpu,
                                   memory=self.memory, pods=self.max_pods, labels=self.labels)
        try:
            created = await self.client.create(NODES, body)
        except ApiError as exc:
            if exc.code != 409:
                raise
            created = await self.client.patch(NODES, None, name,
                                              {"metadata": {"labels": body["metadata"]["labels"]}})
        self._node_uid[name] = created["metadata"]["uid"]
        self._last_report[name] = time.monotonic()
        await self._renew_lease(name)  # the first lease comes with registration

    async def _remove(self, name: str) -> None:
        assert NODES is not None and LEASES is not None
        for info, namespace in ((LEASES, LEASE_NAMESPACE), (NODES, None)):
            try:
                await self.client.delete(info, namespace, name)
            except (ApiError, OSError) as exc:
                if not is_not_found(exc):
                    log.warning("sim: removing %s %s failed: %s", info.kind, name, exc)

    async def _beat(self, name: str) -> None:
        if name not in self._alive:
            return  # a stopped node: its next beat is scheduled by start_node
        started = time.monotonic()
        try:
            await self._renew_lease(name)
            await self._post_status(name)
        finally:
            if name in self._alive:
                self._beats.add_after(name, max(0.0, self.heartbeat -
                                                (time.monotonic() - started)))

    async def _renew_lease(self, name: str) -> None:
        lease = await renew_node_lease(self.client, name, self.lease_duration,
                                       self._node_uid.get(name), self._leases.get(name))
        self._leases[name] = lease if lease is not None else {}
        self.stats["lease_renewals"] += 1

    async def _post_status(self, name: str) -> None:
        """Patch the node status when it differs from what the kubelet would say (someone
        marked it Unknown) or when `status_report_seconds` passed since the last post."""
        assert NODES is not None
        current = self.nodes.get(name)
        if current is None:
            await self._register(name)  # deleted behind our back: register again
            return
        status = current.get("status") or {}
        wanted = objects.node_status(name, self._host_ip[name], cpu=self.cpu,
                                     memory=self.memory, pods=self.max_pods,
                                     previous=status.get("conditions"))
        due = time.monotonic() - self._last_report.get(name, 0.0) >= self.report
        if not due and not objects.status_differs(status, _canonical(wanted, status)):
            return
        await self.client.patch(NODES, None, name, {"status": wanted}, sub="status")
        self._last_report[name] = time.monotonic()
        self.stats["status_posts"] += 1

    # -- pods ------------------------------------------------------------------------------

    def _pod_event(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self._alive:
            return
        if pod["metadata"].get("deletionTimestamp"):
            self._pods_queue.add(object_key(pod))
        elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
                not objects.is_running_as_posted(pod, self._host_ip[node]):
            self._pods_queue.add(object_key(pod))

    def _claim_existing_ip(self, pod: Obj) -> None:
        """After a restart, pods keep the addresses they were given."""
        node = (pod.get("spec") or {}).get("nodeName")
        ip = (pod.get("status") or {}).get("podIP")
        uid = pod["metadata"].get("uid") or ""
        if node in self._ips and ip and not (pod.get("spec") or {}).get("hostNetwork") \
                and self._ips[node].claim(uid, ip):
            self._pod_slot[object_key(pod)] = (node, uid)

    async def _sync_pod(self, key: str) -> None:
        assert PODS is not None
        pod = self.pods.get(key)
        slot = self._pod_slot.get(key)
        if slot is not None and (pod is None or pod["metadata"].get("uid") != slot[1]
                                 or pod["spec"].get("nodeName") != slot[0]):
            self._ips[slot[0]].release(slot[1])
            del self._pod_slot[key]
        if pod is None:
            return
        node = pod["spec"].get("nodeName")
        if node not in self._alive:
            return
        namespace, name = split_key(key)
        uid = pod["metadata"].get("uid") or ""
        if pod["metadata"].get("deletionTimestamp"):
            # The containers are "stopped": finish the graceful deletion, as a kubelet does.
            try:
                await self.client.delete(PODS, namespace, name, grace_period_seconds=0,
                                         preconditions={"uid": uid})
                self.stats["pods_deleted"] += 1
            except ApiError as exc:
                if not is_not_found(exc) and exc.code != 409:
                    raise
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or \
                objects.is_running_as_posted(pod, self._host_ip[node]):
            return
        status = self._admit_and_start(key, pod, node, uid)
        try:
            await self.client.patch(PODS, namespace, name, {
                "metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                "status": status}, sub="status")
        except ApiError as exc:
            if not is_not_found(exc) and not is_conflict(exc):
                raise  # a conflict means a newer pod is on its way through the informer
            return
        if status.get("phase") == "Running":
            self.stats["pods_started"] += 1

    def _admit_and_start(self, key: str, pod: Obj, node: str, uid: str) -> Obj:
        host_ip = self._host_ip[node]
        if (pod.get("spec") or {}).get("hostNetwork"):
            return objects.running_status(pod, pod_ip=host_ip, host_ip=host_ip)
        ips = self._ips[node]
        ip = ips.get(uid)
        if ip is None:
            if len(ips) >= int(self.max_pods):
                return objects.rejected_status(
                    pod, "OutOfpods", f"Pod Node didn't have enough resource: pods, "
                    f"requested: 1, used: {len(ips)}, capacity: {self.max_pods}")
            ip = ips.allocate(uid)
            if ip is None:
                return objects.rejected_status(pod, "OutOfpods", "no free pod address")
            self._pod_slot[key] = (node, uid)
        return objects.running_status(pod, pod_ip=ip, host_ip=host_ip)


def _canonical(wanted: Obj, stored: Obj) -> Obj:
    """`wanted` with the quantities that equal the stored ones spelled as stored (the server
    canonicalizes them), so that only a real change counts as one."""
    out = dict(wanted)
    for field in ("capacity", "allocatable"):
        stored_field = stored.get(field) or {}
        out[field] = {name: stored_field[name] if _same_quantity(stored_field.get(name), raw)
                      else raw for name, raw in wanted[field].items()}
    return out


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return a is not None and parse_quantity(a) == parse_quantity(b)
    except QuantityError:
        return a == b
