"""`dockyard node`: Docker Swarm's node commands over Kubernetes Nodes.

Availability maps to the Node's `spec.unschedulable` (pause: no new tasks, as `kubectl
cordon`) plus an annotation telling pause from drain; drain also deletes the node's pods that
a controller will replace elsewhere (the API server has no `pods/eviction` subresource yet, so
this is a plain graceful delete: each pod gets its terminationGracePeriodSeconds; there are no
PodDisruptionBudgets to respect). Pods no controller owns are left running, with a warning,
as `kubectl drain` refuses them without --force. Managers are the nodes an API server runs on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.inspect import node_json, node_pretty, node_role
from dockyard.cli.swarm.options import parse_label
from dockyard.cli.swarm.tables import NODE_HEADERS, render

if TYPE_CHECKING:  # the API modules load aiohttp: imported when a command runs
    from dockyard.cli.swarm.cluster import Swarm

Obj = dict[str, Any]


def run(kubeconfig: str | None, namespace: str, body: Any) -> None:
    from dockyard.cli.swarm.cluster import run as run_with_cluster

    run_with_cluster(kubeconfig, namespace, body)


def _cluster_option(f):  # type: ignore[no-untyped-def]
    return click.option("--kubeconfig", default=None, help="Cluster to use (default: "
                        "$KUBECONFIG, then the default data directory's kubeconfig).")(f)


@click.group("node")
def node() -> None:
    """Manage the cluster's nodes, as Docker Swarm's `node` commands do."""


async def _roles(swarm: Swarm, nodes: list[Obj]) -> dict[str, str]:
    """node name → Docker's MANAGER STATUS (Leader, Reachable, Unreachable or empty)."""
    addresses = await swarm.manager_addresses()
    managers = [n for n in nodes if node_role(n, addresses) == "manager"]
    leader_host = await swarm.leader_host()
    out = {}
    for n in managers:
        name = n["metadata"]["name"]
        hostname = (n["metadata"].get("labels") or {}).get(mapping.HOSTNAME_LABEL, name)
        if mapping.node_ready(n) != "True":
            out[name] = "Unreachable"
        elif len(managers) == 1 or leader_host in (name, hostname):
            out[name] = "Leader"
        else:
            out[name] = "Reachable"
    return out


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@_cluster_option
def ls_command(quiet: bool, kubeconfig: str | None) -> None:
    """List nodes (ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS ENGINE VERSION)."""
    async def body(swarm: Swarm) -> int:
        nodes = await swarm.nodes()
        roles = await _roles(swarm, nodes)
        current = swarm.current_node(nodes)
        rows = []
        for n in nodes:
            meta = n["metadata"]
            node_id = mapping.swarm_id(meta["uid"])
            if quiet:
                click.echo(node_id)
                continue
            marker = " *" if current is not None and current["metadata"]["uid"] == meta["uid"] \
                else ""
            status = {"True": "Ready", "False": "Down"}.get(mapping.node_ready(n), "Unknown")
            rows.append([node_id + marker,
                         (meta.get("labels") or {}).get(mapping.HOSTNAME_LABEL, meta["name"]),
                         status, mapping.availability(n).capitalize(),
                         roles.get(meta["name"], ""),
                         ((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion",
                                                                              "")])
        if not quiet:
            click.echo(render(NODE_HEADERS, rows))
        return 0

    run(kubeconfig, "default", body)


@node.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a readable format.")
@_cluster_option
@click.argument("names", nargs=-1, required=True, metavar="NODE...")
def inspect_command(names: tuple[str, ...], pretty: bool, kubeconfig: str | None) -> None:
    """Display detailed information on one or more nodes ("self": the current one)."""
    async def body(swarm: Swarm) -> int:
        nodes = await swarm.nodes()
        roles = await _roles(swarm, nodes)
        port = _api_port(swarm)
        found = []
        for ref in names:
            n = await swarm.find_node(ref)
            name = n["metadata"]["name"]
            found.append(node_json(n, role="manager" if name in roles else "worker",
                                   leader=roles.get(name) == "Leader", api_port=port))
        if pretty:
            click.echo("\n".join(node_pretty(info) for info in found), nl=False)
        else:
            click.echo(json.dumps(found, indent=4))
        return 0

    run(kubeconfig, "default", body)


def _api_port(swarm: Swarm) -> int:
    from urllib.parse import urlsplit

    return urlsplit(swarm.client.base_url).port or 443


@node.command("update")
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]),
              help="Availability of the node.")
@click.option("--label-add", multiple=True, help="Add or update a node label (key=value).")
@click.option("--label-rm", multiple=True, help="Remove a node label if it exists.")
@click.option("--role", default=None, help="Not supported: managers are API server hosts.")
@_cluster_option
@click.argument("ref", metavar="NODE")
def update_command(ref: str, availability: str | None, label_add: tuple[str, ...],
                   label_rm: tuple[str, ...], role: str | None, kubeconfig: str | None) -> None:
    """Update a node: availability (drain deletes its pods) and labels."""
    if role is not None:
        raise click.UsageError("--role is not supported: a node is a manager when it runs "
                               "an API server (`dockyard server`/`up`), a worker otherwise")
    try:
        labels: dict[str, str | None] = {k: v for k, v in map(parse_label, label_add)}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for key in label_rm:
        labels[key] = None

    async def body(swarm: Swarm) -> int:
        n = await swarm.find_node(ref)
        name = n["metadata"]["name"]
        patch: Obj = {}
        if labels:
            patch["metadata"] = {"labels": labels}
        if availability:
            change = mapping.availability_patch(availability)
            patch.setdefault("metadata", {}).update(change["metadata"])
            patch["spec"] = change["spec"]
        if patch:
            from dockyard.cli.swarm.cluster import NODES

            await swarm.client.patch(NODES, None, name, patch)
        await swarm.sync_global()  # global services follow availability and labels
        if availability == "drain":
            await _drain(swarm, name)
        click.echo(ref)
        return 0

    run(kubeconfig, "default", body)


async def _drain(swarm: Swarm, node_name: str) -> None:
    from dockyard.cli.swarm.cluster import PODS
    from dockyard.client.rest import ApiError, is_not_found

    pods = (await swarm.client.list(PODS, None,
                                    field_selector=f"spec.nodeName={node_name}"))["items"]
    for pod in pods:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        if not any(ref.get("controller") for ref in meta.get("ownerReferences") or []):
            click.echo(f"warning: pod {meta['namespace']}/{meta['name']} is not managed by a "
                       "controller and keeps running on the drained node (delete it "
                       "yourself)", err=True)
            continue
        try:
            await swarm.client.delete(PODS, meta["namespace"], meta["name"])
        except ApiError as exc:
            if not is_not_found(exc):
                raise
