"""The `dockyard` command: run the control plane, print the kubeconfig.

Each subcommand is a thin wrapper over a component's public entry point; components never
depend on the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

DEFAULT_DATA_DIR = Path(
    os.environ.get("DOCKYARD_DATA_DIR")
    or ("/var/lib/dockyard" if os.geteuid() == 0 else "~/.local/share/dockyard")
).expanduser()


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


@click.group()
@click.version_option(package_name="dockyard")
def main() -> None:
    """dockyard: a Kubernetes-compatible container platform."""


def _server_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR,
                     show_default=True, help="Where the cluster's state lives.")(f)
    f = click.option("--api-port", type=int, default=6443, show_default=True,
                     help="HTTPS port of the API server (0: any free port).")(f)
    f = click.option("--bind-address", default="0.0.0.0", show_default=True,
                     help="Address the API server listens on.")(f)
    f = click.option("--datastore", default="", help="sqlite:///PATH (default: "
                     "DATA_DIR/state.db) or etcd://HOST:PORT[,HOST:PORT...][/prefix].")(f)
    f = click.option("--tls-san", multiple=True, help="Extra name or IP for the serving "
                     "certificate.")(f)
    f = click.option("--watch-window", type=int, default=20_000, show_default=True,
                     help="Events kept in memory for resuming watches.")(f)
    f = click.option("--disable-scheduler", is_flag=True,
                     help="Do not run the scheduler in this process.")(f)
    f = click.option("--disable-controller-manager", is_flag=True,
                     help="Do not run the controllers in this process.")(f)
    f = click.option("--node-monitor-grace-period", type=float, default=40.0,
                     show_default=True, help="Seconds without a heartbeat before a node is "
                     "NotReady/Unknown.")(f)
    f = click.option("--service-cidr", default="10.43.0.0/16", show_default=True,
                     help="IPv4 range of Service cluster IPs.")(f)
    f = click.option("--service-node-port-range", default="30000-32767", show_default=True,
                     help="Ports for NodePort Services.")(f)
    f = click.option("--advertise-address", default="", help="Address of this API server "
                     "for the `kubernetes` Service (default: the bind address, or the "
                     "source address of the default route).")(f)
    f = click.option("--token", default="", envvar="DOCKYARD_TOKEN", help="Server token "
                     "sealing the cluster's CA and tokens in an etcd datastore: the first "
                     "server prints one if none is given; the others need it (kept in "
                     "DATA_DIR/pki/server-token).")(f)
    f = click.option("--leader-elect-lease-duration", type=float, default=10.0,
                     show_default=True, help="Lease of the in-process scheduler and "
                     "controller manager: a standby server takes over this long after the "
                     "leader's server stopped renewing.")(f)
    f = _cidr_options(f)
    f = click.option("-v", "--verbose", count=True)(f)
    return f


def _cidr_options(f):  # type: ignore[no-untyped-def]
    """The node IPAM controller's settings (kube-controller-manager's flag names)."""
    f = click.option("--cluster-cidr", default="10.42.0.0/16", show_default=True,
                     help="Pod addresses of the whole cluster; each node gets a range of it.")(f)
    f = click.option("--node-cidr-mask-size", type=int, default=24, show_default=True,
                     help="Prefix length of each node's pod range.")(f)
    return f


def _serve(data_dir: Path, api_port: int, bind_address: str, datastore: str,
           tls_san: tuple[str, ...], watch_window: int, disable_scheduler: bool,
           disable_controller_manager: bool, node_monitor_grace_period: float,
           service_cidr: str, service_node_port_range: str, advertise_address: str,
           cluster_cidr: str, node_cidr_mask_size: int, token: str,
           leader_elect_lease_duration: float, verbose: int, agent: object = None) -> None:
    from dockyard.apiserver.bootstrap import BootstrapError
    from dockyard.apiserver.ranges import ServiceRanges
    from dockyard.apiserver.server import serve

    try:
        ServiceRanges.parse(service_cidr, service_node_port_range)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    _setup_logging(verbose)
    options = {"nodelifecycle": {"node_monitor_grace_period": node_monitor_grace_period},
               "nodeipam": {"cluster_cidr": cluster_cidr,
                            "node_cidr_mask_size": node_cidr_mask_size}}
    try:
        _run(serve(data_dir=data_dir, bind_address=bind_address, api_port=api_port,
                   datastore=datastore, tls_sans=list(tls_san), watch_window=watch_window,
                   scheduler=not disable_scheduler,
                   controller_manager=not disable_controller_manager,
                   controller_options=options, agent=agent,  # type: ignore[arg-type]
                   service_cidr=service_cidr, service_node_port_range=service_node_port_range,
                   advertise_address=advertise_address, token=token,
                   lease_duration=leader_elect_lease_duration))
    except BootstrapError as exc:
        raise click.ClickException(str(exc)) from None


def _agent_options(f):  # type: ignore[no-untyped-def]
    """The node agent's settings (a subset of the kubelet's flags, same names)."""
    f = click.option("--node-name", default=None,
                     help="Name of this node (default: the host name).")(f)
    f = click.option("--pod-cidr", default="",
                     help="This node's pod subnet (the CNI bridge's range; default: the range "
                     "the cluster assigns from --cluster-cidr).")(f)
    f = click.option("--max-pods", type=int, default=110, show_default=True)(f)
    f = click.option("--agent-port", type=int, default=10250, show_default=True,
                     help="HTTPS port for logs and exec (0: any free port).")(f)
    f = click.option("--node-ip", default="", help="Address the node reports (default: "
                     "the source address of the default route).")(f)
    f = click.option("--pod-max-pids", type=int, default=4096, show_default=True,
                     help="Process limit of each pod (0: unlimited).")(f)
    f = click.option("--crash-backoff", "crash_backoff", default="10s,300s", show_default=True,
                     help="First and longest restart back-off of crashing containers.")(f)
    f = click.option("--node-labels", default="", help="key=value,... added to the Node.")(f)
    return f


def _seconds(text: str) -> float:
    text = text.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _kubelet_config(data_dir: Path, node_name: str | None, pod_cidr: str, max_pods: int,
                    agent_port: int, node_ip: str, pod_max_pids: int, crash_backoff: str,
                    node_labels: str) -> object:
    import socket

    from dockyard.kubelet.config import KubeletConfig
    from dockyard.network.dns import node_dns_address
    from dockyard.runtime.naming import cluster_prefix

    first, _, longest = crash_backoff.partition(",")
    labels = dict(item.split("=", 1) for item in node_labels.split(",") if "=" in item)
    return KubeletConfig(
        node_name=node_name or socket.gethostname().lower(), data_dir=data_dir.resolve(),
        prefix=cluster_prefix(data_dir), max_pods=max_pods, pod_cidr=pod_cidr,
        serving_port=agent_port, address=node_ip, node_labels=labels,
        pod_pids_limit=pod_max_pids or None, backoff_initial=_seconds(first),
        backoff_max=_seconds(longest or "300s"),
        # This node's DNS (network/dns) on the bridge; without --pod-cidr the agent fills it
        # in once the cluster assigned the range (kubelet/agent.py).
        cluster_dns=[node_dns_address(pod_cidr)] if pod_cidr else [])


@main.command()
@_server_options
def server(**kwargs: object) -> None:
    """Run the control plane (API server on the embedded store) until SIGTERM/SIGINT."""
    _serve(**kwargs)  # type: ignore[arg-type]


@main.command()
@_server_options
@_agent_options
def up(node_name: str | None, pod_cidr: str, max_pods: int, agent_port: int, node_ip: str,
       pod_max_pids: int, crash_backoff: str, node_labels: str, **kwargs: object) -> None:
    """Start a single-node cluster in this process: control plane and node agent."""
    agent = _kubelet_config(kwargs["data_dir"], node_name, pod_cidr, max_pods,  # type: ignore[arg-type]
                            agent_port, node_ip, pod_max_pids, crash_backoff, node_labels)
    # This node also runs the control plane (kubectl's ROLES column; Swarm's managers).
    agent.node_labels.setdefault("node-role.kubernetes.io/control-plane", "")  # type: ignore[attr-defined]
    _serve(**kwargs, agent=agent)  # type: ignore[arg-type]


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True)
def cleanup(data_dir: Path) -> None:
    """Remove everything the cluster in DATA_DIR made on this host (containers, mounts,
    cgroups, network namespaces, the bridge). Stop the cluster first; the data stays."""
    from dockyard.kubelet.agent import cleanup as cleanup_host
    from dockyard.runtime.naming import cluster_prefix

    _setup_logging(0)
    _run(cleanup_host(data_dir.resolve(), cluster_prefix(data_dir)))
    click.echo(f"dockyard: removed what cluster {cluster_prefix(data_dir)} made on this host")


def find_kubeconfig(explicit: str | None) -> Path:
    """Like kubectl: --kubeconfig, then $KUBECONFIG, then the default data directory's."""
    for candidate in (explicit, os.environ.get("KUBECONFIG"),
                      str(DEFAULT_DATA_DIR / "kubeconfig.yaml")):
        if candidate:
            path = Path(candidate.split(os.pathsep)[0]).expanduser()
            if path.exists():
                return path
    raise click.ClickException("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start a "
                               "cluster with `dockyard up`")


def _component_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--kubeconfig", "kubeconfig_path", default=None,
                     help="Cluster to join (default: $KUBECONFIG, then the data directory's).")(f)
    f = click.option("--leader-elect/--no-leader-elect", default=True, show_default=True,
                     help="Act only while holding the component's Lease in kube-system.")(f)
    f = click.option("--lease-duration", type=float, default=15.0, show_default=True)(f)
    f = click.option("-v", "--verbose", count=True)(f)
    return f


def _run_component(kubeconfig_path: str | None, verbose: int, name: str, body) -> None:  # type: ignore[no-untyped-def]
    from dockyard.client.rest import Client

    _setup_logging(verbose)
    path = find_kubeconfig(kubeconfig_path)

    async def main_() -> None:
        client = Client.from_kubeconfig(path, user_agent=f"dockyard/{name}")
        try:
            await body(client)
        finally:
            await client.close()

    try:
        _run(main_())
    except KeyboardInterrupt:
        pass


@main.command("scheduler")
@_component_options
@click.option("--scheduler-name", default="default-scheduler", show_default=True,
              help="Schedule only pods whose spec.schedulerName is this.")
@click.option("--percentage-of-nodes-to-score", type=int, default=0, show_default=True,
              help="Share of nodes examined per pod (0: adaptive, as Kubernetes).")
def scheduler_command(kubeconfig_path: str | None, leader_elect: bool, lease_duration: float,
                      verbose: int, scheduler_name: str,
                      percentage_of_nodes_to_score: int) -> None:
    """Run the scheduler against any API server (leader-elected on kube-system/kube-scheduler)."""
    from dockyard.scheduler.app import run_scheduler

    _run_component(kubeconfig_path, verbose, "scheduler", lambda client: run_scheduler(
        client, leader_elect=leader_elect, lease_duration=lease_duration,
        renew_deadline=lease_duration * 2 / 3, retry_period=lease_duration / 7.5,
        scheduler_name=scheduler_name,
        percentage_of_nodes_to_score=percentage_of_nodes_to_score))


@main.command("controller-manager")
@_component_options
@click.option("--controllers", default="", help="Comma-separated subset to run (default: all).")
@click.option("--node-monitor-grace-period", type=float, default=40.0, show_default=True)
@_cidr_options
def controller_manager_command(kubeconfig_path: str | None, leader_elect: bool,
                               lease_duration: float, verbose: int, controllers: str,
                               node_monitor_grace_period: float, cluster_cidr: str,
                               node_cidr_mask_size: int) -> None:
    """Run the controllers against any API server (leader-elected)."""
    from dockyard.controllers.manager import ControllerManager, run_elected

    enabled = [c.strip() for c in controllers.split(",") if c.strip()] or None
    options = {"nodelifecycle": {"node_monitor_grace_period": node_monitor_grace_period},
               "nodeipam": {"cluster_cidr": cluster_cidr,
                            "node_cidr_mask_size": node_cidr_mask_size}}
    _run_component(kubeconfig_path, verbose, "controller-manager", lambda client: run_elected(
        client, "kube-controller-manager",
        ControllerManager(client, enabled=enabled, options=options).run,
        leader_elect=leader_elect, lease_duration=lease_duration,
        renew_deadline=lease_duration * 2 / 3, retry_period=lease_duration / 7.5))


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True)
def kubeconfig(data_dir: Path) -> None:
    """Print the admin kubeconfig of the cluster in DATA_DIR."""
    path = data_dir / "kubeconfig.yaml"
    if not path.exists():
        raise click.ClickException(
            f"{path} does not exist: start the cluster first (dockyard up --data-dir {data_dir})"
        )
    click.echo(path.read_text(), nl=False)


def _register_commands() -> None:
    from dockyard.cli.agent import agent_command, token_command
    from dockyard.cli.cluster import cluster_command
    from dockyard.cli.image import image
    from dockyard.cli.sim import sim_command
    from dockyard.cli.swarm.node_cmd import node as node_group
    from dockyard.cli.swarm.service_cmd import service as service_group

    main.add_command(sim_command)
    main.add_command(image)
    main.add_command(agent_command)
    main.add_command(token_command)
    main.add_command(cluster_command)
    main.add_command(service_group)
    main.add_command(node_group)


_register_commands()

if __name__ == "__main__":
    main()
