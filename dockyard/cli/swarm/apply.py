"""Writing a spec to the cluster: create a service's Deployment and Service, or move them to
a new spec (update, rollback). Node ports outside the cluster's range fall back to ones the
cluster chooses, with a warning that names the port actually published."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.cluster import DEPLOYMENTS, SERVICES, Swarm
from dockyard.cli.swarm.spec import ServiceSpec, UpdateConfig
from dockyard.client.rest import ApiError, is_not_found

Obj = dict[str, Any]
Warn = Callable[[str], None]
_RANGE = re.compile(r"range of valid ports is (\S+)")


async def replicas_for(swarm: Swarm, spec: ServiceSpec) -> int:
    return await swarm.global_replicas(spec) if spec.mode == "global" else spec.replicas


async def create(swarm: Swarm, spec: ServiceSpec, warn: Warn) -> Obj:
    """Deployment, then its Service; the Deployment is removed again if the Service fails."""
    node_names = await swarm.node_names() if _uses_node_ids(spec) else None
    desired = mapping.deployment(spec, swarm.namespace, await replicas_for(swarm, spec),
                                 node_names=node_names)
    try:
        d = await swarm.client.create(DEPLOYMENTS, desired)
    except ApiError as exc:
        if exc.code == 409:
            raise click.ClickException(f"service {spec.name} already exists") from None
        raise
    try:
        await _write_service(swarm, mapping.service(spec, swarm.namespace, owner=d), None, warn)
    except BaseException:
        await swarm.client.delete(DEPLOYMENTS, swarm.namespace, spec.name)
        raise
    return d


async def move(swarm: Swarm, spec: ServiceSpec, *, previous: ServiceSpec | None,
               config: UpdateConfig, status: Obj, warn: Warn) -> Obj:
    """The service's objects changed to `spec`; `config` drives this rollout."""
    node_names = await swarm.node_names() if _uses_node_ids(spec) else None
    desired = mapping.deployment(spec, swarm.namespace, await replicas_for(swarm, spec),
                                 previous=previous, node_names=node_names,
                                 update_config=config)
    desired["metadata"]["annotations"].update(status["metadata"]["annotations"])
    d = await swarm.mutate(DEPLOYMENTS, spec.name,
                           lambda current: mapping.apply_deployment(current, desired))
    existing = await swarm.k8s_service(spec.name)
    await _write_service(swarm, mapping.service(spec, swarm.namespace, owner=d), existing, warn)
    return d


def _uses_node_ids(spec: ServiceSpec) -> bool:
    return any(c.startswith("node.id") for c in spec.constraints)


async def _write_service(swarm: Swarm, desired: Obj, existing: Obj | None, warn: Warn) -> None:
    body = desired
    if existing is not None:
        changed = mapping.apply_service(existing, desired)
        if changed is None:  # headless <-> virtual IP: the address cannot change in place
            await swarm.client.delete(SERVICES, swarm.namespace, desired["metadata"]["name"])
            existing = None
        else:
            body = changed
    for _ in range(2):
        try:
            if existing is None:
                await swarm.client.create(SERVICES, body)
            else:
                await swarm.client.update(SERVICES, body)
            return
        except ApiError as exc:
            refused = _out_of_range(exc, body)
            if not refused:
                raise
            wanted = ", ".join(str(p) for p in refused)
            found = _RANGE.search(str(exc.status.get("message", "")))
            warn(f"published port {wanted} is outside the cluster's NodePort range "
                 f"({found.group(1) if found else 'see --service-node-port-range'}): "
                 "publishing on a port the cluster chooses instead (see `dockyard service "
                 "inspect`); start the server with a wider --service-node-port-range to "
                 "publish it as asked")
            body = mapping.without_node_ports(body, refused)


def _out_of_range(exc: ApiError, svc: Obj) -> list[int]:
    if exc.code != 422 or "not in the valid range" not in str(exc.status.get("message", "")):
        return []
    message = str(exc.status.get("message", ""))
    return [p["nodePort"] for p in svc["spec"].get("ports") or []
            if p.get("nodePort") and str(p["nodePort"]) in message]


async def remove(swarm: Swarm, name: str) -> None:
    for info in (SERVICES, DEPLOYMENTS):
        try:
            await swarm.client.delete(info, swarm.namespace, name,
                                      propagation_policy="Background")
        except ApiError as exc:
            if not is_not_found(exc):
                raise
