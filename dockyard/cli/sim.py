"""`dockyard sim`: run simulated nodes against a cluster until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click


def find_kubeconfig(flag: str | None) -> Path:
    """kubectl's order: --kubeconfig, then the first file in $KUBECONFIG, then ~/.kube/config."""
    if flag:
        return Path(flag).expanduser()
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).expanduser().exists():
            return Path(entry).expanduser()
    return Path("~/.kube/config").expanduser()


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


async def _run_sim(kubeconfig: Path, options: dict[str, object]) -> None:
    from dockyard.client.rest import Client
    from dockyard.sim import SimulatedNodes

    client = Client.from_kubeconfig(kubeconfig, user_agent="dockyard-sim")
    sim = SimulatedNodes(client, **options)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sim.stop)
    task = asyncio.create_task(sim.run())
    try:
        registered = asyncio.create_task(sim.wait_registered())
        await asyncio.wait({task, registered}, return_when=asyncio.FIRST_COMPLETED)
        if registered.done():
            click.echo(f"{len(sim.names)} simulated nodes registered "
                       f"({sim.names[0] if sim.names else '-'} ...); Ctrl-C to stop", err=True)
        else:
            registered.cancel()
        await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await client.close()


@click.command("sim")
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG, then "
              "~/.kube/config).")
@click.option("--nodes", "count", type=click.IntRange(min=1), required=True,
              help="How many nodes to simulate.")
@click.option("--zones", type=click.IntRange(min=1), default=1, show_default=True,
              help="Spread nodes over this many topology.kubernetes.io/zone values.")
@click.option("--cpu", default="8", show_default=True, help="CPU capacity of each node.")
@click.option("--memory", default="32Gi", show_default=True, help="Memory of each node.")
@click.option("--pods", type=click.IntRange(min=1), default=110, show_default=True,
              help="Pod capacity of each node.")
@click.option("--name-prefix", default="sim-node", show_default=True,
              help="Nodes are named PREFIX-0, PREFIX-1, ...")
@click.option("--first-index", type=click.IntRange(min=0), default=0, show_default=True,
              help="Number of the first node (run several groups without overlap).")
@click.option("--heartbeat-seconds", type=float, default=10.0, show_default=True,
              help="How often each node renews its Lease.")
@click.option("--label", "label", multiple=True, help="Extra node label KEY=VALUE.")
@click.option("--remove-nodes-on-exit", is_flag=True, help="Delete the nodes when stopping.")
@click.option("-v", "--verbose", count=True)
def sim_command(kubeconfig: str | None, count: int, zones: int, cpu: str, memory: str,
                pods: int, name_prefix: str, first_index: int, heartbeat_seconds: float,
                label: tuple[str, ...], remove_nodes_on_exit: bool, verbose: int) -> None:
    """Register simulated nodes whose fake kubelets run every pod bound to them at once."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = find_kubeconfig(kubeconfig)
    if not path.exists():
        raise click.UsageError(f"kubeconfig {path} not found: pass --kubeconfig or set "
                               "KUBECONFIG")
    options: dict[str, object] = dict(
        count=count, zones=zones, cpu=cpu, memory=memory, pods=str(pods), name_prefix=name_prefix,
        first_index=first_index, heartbeat_seconds=heartbeat_seconds, labels=_labels(label),
        remove_nodes_on_exit=remove_nodes_on_exit)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    from dockyard.client.rest import ApiError

    try:
        runner(_run_sim(path, options))
    except ApiError as exc:
        raise click.ClickException(f"the API server refused: {exc}") from exc
