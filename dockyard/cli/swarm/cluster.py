"""The cluster as the Swarm commands need it: services (Deployment + Service), their pods and
ReplicaSets, nodes; read-modify-write with retries on conflicts; global services' task counts
kept in step with the nodes. Only API calls through `dockyard.client.rest.Client`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from dockyard.api.resources import ResourceInfo, by_kind
from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.spec import ServiceSpec
from dockyard.cli.swarm.tasks import assign_slots, meta
from dockyard.client.rest import ApiError, Client, TransportError, is_conflict, is_not_found
from dockyard.controllers.deployment_util import POD_TEMPLATE_HASH, find_new_replicaset

log = logging.getLogger("dockyard.swarm")
Obj = dict[str, Any]


def _kind(group: str, kind: str) -> ResourceInfo:
    info = by_kind(group, kind)
    assert info is not None, kind
    return info


DEPLOYMENTS = _kind("apps", "Deployment")
REPLICASETS = _kind("apps", "ReplicaSet")
SERVICES = _kind("", "Service")
PODS = _kind("", "Pod")
NODES = _kind("", "Node")
ENDPOINTS = _kind("", "Endpoints")
LEASES = _kind("coordination.k8s.io", "Lease")


@dataclass
class Snapshot:
    """One service as the cluster has it now."""

    deployment: Obj
    spec: ServiceSpec
    pods: list[Obj]
    replicasets: list[Obj]

    @property
    def current_hash(self) -> str | None:
        """pod-template-hash of the Deployment's current template (None before the
        controller made its ReplicaSet)."""
        d = self.deployment
        if (d.get("status") or {}).get("observedGeneration", 0) < d["metadata"].get(
                "generation", 0):
            return None
        new = find_new_replicaset(d, self.replicasets)
        return ((new or {}).get("metadata", {}).get("labels") or {}).get(POD_TEMPLATE_HASH)


class Swarm:
    """The API as `dockyard service` and `dockyard node` use it, in one namespace."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    # -- services ----------------------------------------------------------------------------

    async def services(self) -> list[Obj]:
        found = await self.client.list(DEPLOYMENTS, self.namespace,
                                       label_selector=mapping.LABEL_SERVICE)
        return sorted((d for d in found.get("items") or [] if mapping.is_service(d)),
                      key=lambda d: d["metadata"]["name"])

    async def find(self, ref: str) -> Obj:
        """A service's Deployment by name, ID or unique ID prefix (as Docker finds one)."""
        try:
            d = await self.client.get(DEPLOYMENTS, self.namespace, ref)
            if mapping.is_service(d):
                return d
        except ApiError as exc:
            if not is_not_found(exc):
                raise
        matches = [d for d in await self.services()
                   if mapping.swarm_id(d["metadata"]["uid"]).startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise click.ClickException(f"service {ref} is ambiguous ({len(matches)} matches)")
        raise click.ClickException(f"no such service: {ref}")

    async def k8s_service(self, name: str) -> Obj | None:
        try:
            return await self.client.get(SERVICES, self.namespace, name)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def pods(self, name: str) -> list[Obj]:
        found = await self.client.list(PODS, self.namespace,
                                       label_selector=f"{mapping.LABEL_SERVICE}={name}")
        return list(found.get("items") or [])

    async def snapshot(self, name: str) -> Snapshot:
        d, pods, rss = await asyncio.gather(
            self.client.get(DEPLOYMENTS, self.namespace, name), self.pods(name),
            self.client.list(REPLICASETS, self.namespace,
                             label_selector=f"{mapping.LABEL_SERVICE}={name}"))
        spec = mapping.spec_of(d)
        if spec is None:
            raise click.ClickException(f"{name} is not a dockyard service")
        return Snapshot(d, spec, pods, list(rss.get("items") or []))

    async def record_slots(self, pods: list[Obj]) -> None:
        """Write the slots chosen for pods seen for the first time (best effort)."""
        _, chosen = assign_slots(pods)
        by_uid = {meta(p).get("uid"): p for p in pods}
        for uid, slot in chosen.items():
            pod = by_uid[uid]
            patch = {"metadata": {"annotations": {mapping.ANN_SLOT: str(slot)}}}
            try:
                await self.client.patch(PODS, self.namespace, pod["metadata"]["name"], patch)
                pod["metadata"].setdefault("annotations", {})[mapping.ANN_SLOT] = str(slot)
            except ApiError:
                continue  # gone already; the next look chooses again

    async def mutate(self, info: ResourceInfo, name: str,
                     change: Callable[[Obj], Obj], namespace: str | None = "") -> Obj:
        """GET, change, PUT; again on a conflict (someone wrote in between)."""
        ns = self.namespace if namespace == "" else namespace
        for _ in range(20):
            current = await self.client.get(info, ns, name)
            try:
                return await self.client.update(info, change(current))
            except ApiError as exc:
                if not is_conflict(exc):
                    raise
        raise click.ClickException(f"{info.plural}/{name}: too many concurrent changes")

    async def patch_deployment(self, name: str, patch: Obj) -> Obj:
        return await self.client.patch(DEPLOYMENTS, self.namespace, name, patch)

    # -- nodes -------------------------------------------------------------------------------

    async def nodes(self) -> list[Obj]:
        found = await self.client.list(NODES)
        return sorted(found.get("items") or [], key=lambda n: n["metadata"]["name"])

    async def node_names(self) -> dict[str, str]:
        """swarm ID → node name."""
        return {mapping.swarm_id(n["metadata"]["uid"]): n["metadata"]["name"]
                for n in await self.nodes()}

    async def find_node(self, ref: str) -> Obj:
        nodes = await self.nodes()
        if ref == "self":
            current = self.current_node(nodes)
            if current is None:
                raise click.ClickException("this client is not on a node of the cluster: "
                                           "name the node")
            return current
        for n in nodes:
            labels = n["metadata"].get("labels") or {}
            if ref in (n["metadata"]["name"], labels.get(mapping.HOSTNAME_LABEL),
                       mapping.swarm_id(n["metadata"]["uid"])):
                return n
        matches = [n for n in nodes if mapping.swarm_id(n["metadata"]["uid"]).startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise click.ClickException(f"no such node: {ref}" if not matches
                                   else f"node {ref} is ambiguous ({len(matches)} matches)")

    def current_node(self, nodes: list[Obj]) -> Obj | None:
        """The node whose address the API server we talk to is on, as Docker marks the
        node of the engine it talks to."""
        from dockyard.cli.swarm.inspect import node_addresses

        host = urlsplit(self.client.base_url).hostname or ""
        found = [n for n in nodes if host in node_addresses(n)]
        return found[0] if len(found) == 1 else None

    async def manager_addresses(self) -> set[str]:
        """Addresses of the API servers (the `kubernetes` Service's endpoints) and the
        address this client reaches one on."""
        out = {urlsplit(self.client.base_url).hostname or ""}
        try:
            ep = await self.client.get(ENDPOINTS, "default", "kubernetes")
        except ApiError:
            return out
        for subset in ep.get("subsets") or []:
            out |= {a.get("ip", "") for a in subset.get("addresses") or []}
        return out

    async def leader_host(self) -> str:
        """Host name of the process leading the controller manager (`host_pid_random`)."""
        try:
            lease = await self.client.get(LEASES, "kube-system", "kube-controller-manager")
        except ApiError:
            return ""
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        return holder.split("_")[0]

    # -- global services ---------------------------------------------------------------------

    async def global_replicas(self, spec: ServiceSpec) -> int:
        nodes, pods = await asyncio.gather(self.nodes(), self.pods(spec.name))
        names = {mapping.swarm_id(n["metadata"]["uid"]): n["metadata"]["name"] for n in nodes}
        return len(mapping.global_nodes(spec, nodes, pods, names))

    async def sync_global(self, all_namespaces: bool = True) -> list[tuple[str, int]]:
        """Set every global service's replicas to its eligible node count; what changed."""
        found = await self.client.list(DEPLOYMENTS, None if all_namespaces else
                                       self.namespace, label_selector=mapping.LABEL_SERVICE)
        changed = []
        for d in found.get("items") or []:
            spec = mapping.spec_of(d)
            if spec is None or spec.mode != "global":
                continue
            ns = d["metadata"]["namespace"]
            swarm = Swarm(self.client, ns)
            want = await swarm.global_replicas(spec)
            if (d.get("spec") or {}).get("replicas") != want:
                await self.client.patch(DEPLOYMENTS, ns, spec.name, {"spec": {"replicas": want}})
                changed.append((spec.name, want))
        return changed


def run(kubeconfig: str | None, namespace: str,
        body: Callable[[Swarm], Awaitable[int | None]]) -> None:
    """Run one command against the cluster kubectl would use; exit with its code."""
    from dockyard.cli.main import find_kubeconfig

    path = find_kubeconfig(kubeconfig)

    async def main() -> int | None:
        client = Client.from_kubeconfig(path, user_agent="dockyard/swarm")
        try:
            return await body(Swarm(client, namespace))
        finally:
            await client.close()

    try:
        code = asyncio.run(main())
    except ApiError as exc:
        raise click.ClickException(str(exc.status.get("message") or exc)) from None
    except TransportError as exc:
        raise click.ClickException(f"cannot reach the cluster: {exc}") from None
    except KeyboardInterrupt:
        code = 130
    if code:
        raise SystemExit(code)
