"""`dockyard cluster up|down|status`: a local multi-node cluster on this machine
(dockyard/cluster/local.py does the work)."""

from __future__ import annotations

from pathlib import Path

import click


def _default_dir() -> Path:
    # Imported when used: cli/main.py imports this module while it is being imported itself.
    from dockyard.cli.main import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR.with_name(DEFAULT_DATA_DIR.name + "-cluster")


def _data_dir_option(f):  # type: ignore[no-untyped-def]
    return click.option("--data-dir", type=click.Path(path_type=Path), default=_default_dir,
                        help="Where the cluster's state, logs and nodes live "
                        "(default: the data directory's sibling `<name>-cluster`).")(f)


@click.group("cluster")
def cluster_command() -> None:
    """A multi-node cluster on this machine: each node a host of its own (network namespace)."""


@cluster_command.command("up")
@click.option("--nodes", type=click.IntRange(1, 200), default=2, show_default=True,
              help="Worker nodes, each an agent in its own network namespace.")
@click.option("--servers", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="API servers (3 needs --datastore etcd).")
@click.option("--datastore", type=click.Choice(["sqlite", "etcd"]), default="sqlite",
              show_default=True, help="sqlite: the first server's file; etcd: one member "
              "per server, from the `etcd` binary.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for every node to be Ready.")
@_data_dir_option
def cluster_up(nodes: int, servers: str, datastore: str, timeout: float,
               data_dir: Path) -> None:
    """Start the cluster and wait until every node is Ready; the processes keep running."""
    from dockyard.cluster.local import ClusterError, up

    try:
        state = up(data_dir, nodes, int(servers), datastore, say=click.echo, timeout=timeout)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"dockyard: cluster up ({nodes} node{'s' * (nodes != 1)}); stop it with "
               f"`dockyard cluster down --data-dir {state.data_dir}`")
    click.echo(f"export KUBECONFIG={state.kubeconfig}")


@cluster_command.command("down")
@_data_dir_option
@click.option("--remove-logs", is_flag=True, help="Delete DATA_DIR/logs too.")
def cluster_down(data_dir: Path, remove_logs: bool) -> None:
    """Stop every process of the cluster and remove what it made on this host."""
    from dockyard.cluster.local import ClusterError, down

    try:
        left = down(data_dir, say=click.echo, keep_logs=not remove_logs)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    if left:
        raise click.ClickException("left behind: " + "; ".join(left))
    click.echo("dockyard: cluster down")


@cluster_command.command("status")
@_data_dir_option
def cluster_status(data_dir: Path) -> None:
    """List the cluster's pieces: bridge, routes, etcd members, servers, hosts, agents."""
    from dockyard.cluster.local import ClusterError, status_rows

    try:
        rows = [("KIND", "NAME", "PID", "STATE", "DETAIL"), *status_rows(data_dir)]
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo("   ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=False))
                   + "   " + row[4])
