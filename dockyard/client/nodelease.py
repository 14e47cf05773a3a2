"""A node's heartbeat Lease in kube-node-lease, renewed as the kubelet does.

Shared by the node agent and the simulated nodes: the node lifecycle controller watches these
Leases, so both must write them the same way.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from dockyard.api.resources import by_kind
from dockyard.client.leaderelection import micro_time
from dockyard.client.rest import ApiError, Client, is_conflict, is_not_found

LEASES = by_kind("coordination.k8s.io", "Lease")
LEASE_NAMESPACE = "kube-node-lease"

Obj = dict[str, Any]


def lease_object(name: str, node_uid: str | None, duration: int) -> Obj:
    """A new Lease for node `name`, owned by its Node (deleted with it)."""
    meta: Obj = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": name,
                                    "uid": node_uid}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": name, "leaseDurationSeconds": duration,
                     "renewTime": micro_time(datetime.now(UTC))}}


async def renew_node_lease(client: Client, name: str, duration: int, node_uid: str | None,
                           last: Obj | None) -> Obj | None:
    """Renew (or create) the Lease; `last` is the copy from the previous renewal, so the usual
    case is one update. Returns the stored Lease, or None if three tries raced and lost."""
    assert LEASES is not None
    lease = last
    for _ in range(3):
        if lease is None:
            try:
                return await client.create(LEASES, lease_object(name, node_uid, duration))
            except ApiError as exc:
                if exc.code != 409:
                    raise
                lease = await client.get(LEASES, LEASE_NAMESPACE, name)
        lease = copy.deepcopy(lease)
        lease.setdefault("spec", {}).update(holderIdentity=name, leaseDurationSeconds=duration,
                                            renewTime=micro_time(datetime.now(UTC)))
        try:
            return await client.update(LEASES, lease)
        except ApiError as exc:
            if is_not_found(exc):
                lease = None
            elif is_conflict(exc):
                lease = await client.get(LEASES, LEASE_NAMESPACE, name)
            else:
                raise
    return None
