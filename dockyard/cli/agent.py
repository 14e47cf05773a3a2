"""`dockyard agent` (a worker node joining a cluster) and `dockyard token` (join tokens).

`token create` runs where the admin kubeconfig is (a server host) and prints the whole command
for the worker, kubeadm-style: server URL, token, and the CA pin. `agent` joins with it once,
then restarts from the credentials it stored in its data directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import click
import yaml


def _default_data_dir() -> Path:
    # Imported when used: cli/main.py imports this module while it is being imported itself.
    from dockyard.cli.main import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR


@click.command("agent")
@click.option("--server", required=True, help="URL of an API server (https://HOST:PORT).")
@click.option("--token", default="", envvar="DOCKYARD_JOIN_TOKEN",
              help="Bootstrap token from `dockyard token create` (not needed once joined).")
@click.option("--ca-cert-hash", default="", help="sha256:... pin of the cluster CA (printed "
              "by `dockyard token create`); without it, the token's signature vouches for it.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=_default_data_dir,
              help="Where this node keeps its credentials and state.")
@click.option("--node-name", default=None, help="Name of this node (default: the host name).")
@click.option("--node-ip", default="", help="Address the node reports and other nodes route "
              "pods through (default: the source address of the default route).")
@click.option("--pod-cidr", default="", help="This node's pod subnet (default: the range the "
              "cluster assigns).")
@click.option("--max-pods", type=int, default=110, show_default=True)
@click.option("--agent-port", type=int, default=10250, show_default=True,
              help="HTTPS port for logs and exec (0: any free port).")
@click.option("--pod-max-pids", type=int, default=4096, show_default=True,
              help="Process limit of each pod (0: unlimited).")
@click.option("--crash-backoff", default="10s,300s", show_default=True,
              help="First and longest restart back-off of crashing containers.")
@click.option("--node-labels", default="", help="key=value,... added to the Node.")
@click.option("--enable-pod-routing", is_flag=True, help="Switch IPv4 forwarding on even in "
              "the host's root network namespace (needed for pods on other nodes to reach "
              "pods here; never done implicitly there).")
@click.option("-v", "--verbose", count=True)
def agent_command(server: str, token: str, ca_cert_hash: str, data_dir: Path,
                  node_name: str | None, node_ip: str, pod_cidr: str, max_pods: int,
                  agent_port: int, pod_max_pids: int, crash_backoff: str, node_labels: str,
                  enable_pod_routing: bool, verbose: int) -> None:
    """Join the cluster at SERVER as a worker node and run the node agent until SIGTERM."""
    from dockyard.cli.main import _kubelet_config, _run, _setup_logging
    from dockyard.kubelet import nodestatus
    from dockyard.kubelet.bootstrap import JoinError, join_or_reuse
    from dockyard.kubelet.config import KubeletConfig

    _setup_logging(max(verbose, 1))
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = cast(KubeletConfig, _kubelet_config(
        data_dir, node_name, pod_cidr, max_pods, agent_port, node_ip, pod_max_pids,
        crash_backoff, node_labels))
    address = config.address = node_ip or nodestatus.detect_address()

    async def main_() -> None:
        from dockyard.client.rest import Client
        from dockyard.kubelet.agent import Kubelet
        from dockyard.network.dns import run_dns
        from dockyard.network.proxy import run_proxy

        creds = await join_or_reuse(config.state_dir, server=server, token=token,
                                    ca_cert_hash=ca_cert_hash, node_name=config.node_name,
                                    addresses=[address])
        client = Client.from_kubeconfig(creds.kubeconfig, user_agent="dockyard/kubelet")
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        kubelet = Kubelet(client, config, creds.serving, enable_pod_routing=enable_pod_routing)
        try:
            # The node's three parts, as `dockyard up` runs them: the agent, the per-node
            # DNS server and the service proxy (each restarted if it crashes).
            await asyncio.gather(_supervised("kubelet", kubelet.run),
                                 _supervised("dns", lambda: run_dns(client, config)),
                                 _supervised("proxy", lambda: run_proxy(client, config)))
        except asyncio.CancelledError:
            pass  # stopped by a signal: containers keep running
        finally:
            await client.close()

    try:
        _run(main_())
    except JoinError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run one part of the node until cancelled; a crash is logged and retried after 1 s."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one part's crash must not stop the node
            logging.getLogger("dockyard.agent").exception("%s crashed; restarting in 1s", name)
            await asyncio.sleep(1.0)


# -- tokens ---------------------------------------------------------------------------------


def _ttl(text: str) -> timedelta | None:
    from dockyard.cli.main import _seconds

    text = text.strip()
    if text.endswith("h"):
        seconds = float(text[:-1]) * 3600
    elif text.endswith("d"):
        seconds = float(text[:-1]) * 86400
    else:
        seconds = _seconds(text)
    return timedelta(seconds=seconds) if seconds > 0 else None


def _admin_kubeconfig(kubeconfig: str | None, data_dir: Path | None) -> Path:
    from dockyard.cli.main import find_kubeconfig

    if data_dir is not None:
        path = data_dir / "kubeconfig.yaml"
        if not path.exists():
            raise click.ClickException(f"{path} does not exist: is the server of {data_dir} "
                                       "running?")
        return path
    return find_kubeconfig(kubeconfig)


def join_url(kubeconfig: Path, server: str) -> str:
    """The URL a worker should use: --server if given; else the kubeconfig's, with a loopback
    host replaced by the first non-loopback name of the server's certificate (--tls-san)."""
    if server:
        return server.rstrip("/")
    config = yaml.safe_load(kubeconfig.read_text())
    url = config["clusters"][0]["cluster"]["server"]
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    sans = kubeconfig.parent / "pki" / "server.sans"
    if loopback and sans.exists():
        for name in sans.read_text().split():
            try:
                if ipaddress.ip_address(name).is_loopback:
                    continue
            except ValueError:
                if name == "localhost":
                    continue
            bracketed = f"[{name}]" if ":" in name else name
            return urlunsplit(parts._replace(netloc=f"{bracketed}:{parts.port}"))
    if loopback:  # better than a loopback address, which no worker can use
        return urlunsplit(parts._replace(netloc=f"{socket.gethostname()}:{parts.port}"))
    return url


@click.group("token")
def token_command() -> None:
    """Join tokens for agents (bootstrap tokens, kept in the cluster as kube-system Secrets)."""


def _token_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--kubeconfig", "kubeconfig_path", default=None,
                     help="Admin kubeconfig (default: $KUBECONFIG, then the data directory's).")(f)
    f = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="A server's data directory (uses its admin kubeconfig).")(f)
    return f


@token_command.command("create")
@_token_options
@click.option("--ttl", default="24h", show_default=True,
              help="How long the token may be used to join (0: forever).")
@click.option("--description", default="", help="Kept with the token.")
@click.option("--server", default="", help="URL to print for the workers (default: this "
              "cluster's, with a non-loopback --tls-san of the server).")
@click.option("--print-join-command/--quiet", default=True, show_default=True,
              help="Print the whole `dockyard agent` command, or only the token.")
def token_create(kubeconfig_path: str | None, data_dir: Path | None, ttl: str,
                 description: str, server: str, print_join_command: bool) -> None:
    """Create a join token and print the command a worker runs to join."""
    from dockyard.apiserver.join import SECRETS, bootstrap_secret, new_bootstrap_token
    from dockyard.apiserver.pki import ca_cert_hash
    from dockyard.client.rest import ApiError, Client

    path = _admin_kubeconfig(kubeconfig_path, data_dir)
    token = new_bootstrap_token()
    try:
        secret = bootstrap_secret(token, _ttl(ttl), description)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def create() -> None:
        client = Client.from_kubeconfig(path, user_agent="dockyard/token")
        try:
            assert SECRETS is not None
            await client.create(SECRETS, secret, "kube-system")
        finally:
            await client.close()

    try:
        asyncio.run(create())
    except (ApiError, OSError) as exc:
        raise click.ClickException(f"cannot store the token in the cluster: {exc}") from None
    if not print_join_command:
        click.echo(token)
        return
    config = yaml.safe_load(path.read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    click.echo(f"dockyard agent --server {join_url(path, server)} --token {token} "
               f"--ca-cert-hash {ca_cert_hash(ca)}")


@token_command.command("list")
@_token_options
def token_list(kubeconfig_path: str | None, data_dir: Path | None) -> None:
    """List the join tokens (IDs only) and when they expire."""
    from dockyard.apiserver.join import BOOTSTRAP_TOKEN_TYPE, SECRETS, token_expiration
    from dockyard.client.rest import Client

    path = _admin_kubeconfig(kubeconfig_path, data_dir)

    async def fetch() -> list[dict]:
        client = Client.from_kubeconfig(path, user_agent="dockyard/token")
        try:
            assert SECRETS is not None
            return (await client.list(SECRETS, "kube-system"))["items"]
        finally:
            await client.close()

    rows = [("TOKEN ID", "EXPIRES", "DESCRIPTION")]
    now = datetime.now(UTC)
    for secret in asyncio.run(fetch()):
        if secret.get("type") != BOOTSTRAP_TOKEN_TYPE:
            continue
        data = secret.get("data") or {}
        expires = token_expiration(secret)
        description = ""
        when = "never" if expires is None else (
            "expired" if expires <= now else expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
        with contextlib.suppress(ValueError):
            description = base64.b64decode(data.get("description") or "").decode()
        rows.append((base64.b64decode(data.get("token-id") or "").decode(), when,
                     description or "<none>"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]}")


@token_command.command("delete")
@_token_options
@click.argument("token_ids", nargs=-1, required=True)
def token_delete(kubeconfig_path: str | None, data_dir: Path | None,
                 token_ids: tuple[str, ...]) -> None:
    """Revoke join tokens (by ID, or the whole ID.SECRET). Joined nodes keep their own
    credentials."""
    from dockyard.apiserver.join import BOOTSTRAP_PREFIX, SECRETS
    from dockyard.client.rest import ApiError, Client, is_not_found

    path = _admin_kubeconfig(kubeconfig_path, data_dir)

    async def delete() -> int:
        failures = 0
        client = Client.from_kubeconfig(path, user_agent="dockyard/token")
        try:
            assert SECRETS is not None
            for token_id in token_ids:
                token_id = token_id.split(".")[0]
                try:
                    await client.delete(SECRETS, "kube-system", BOOTSTRAP_PREFIX + token_id)
                    click.echo(f"bootstrap token {token_id!r} deleted")
                except ApiError as exc:
                    failures += 1
                    reason = "not found" if is_not_found(exc) else str(exc)
                    click.echo(f"bootstrap token {token_id!r}: {reason}", err=True)
        finally:
            await client.close()
        return failures

    if asyncio.run(delete()):
        sys.exit(1)
