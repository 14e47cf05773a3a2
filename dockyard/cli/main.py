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
                     "DATA_DIR/state.db).")(f)
    f = click.option("--tls-san", multiple=True, help="Extra name or IP for the serving "
                     "certificate.")(f)
    f = click.option("--watch-window", type=int, default=20_000, show_default=True,
                     help="Events kept in memory for resuming watches.")(f)
    f = click.option("-v", "--verbose", count=True)(f)
    return f


def _serve(data_dir: Path, api_port: int, bind_address: str, datastore: str,
           tls_san: tuple[str, ...], watch_window: int, verbose: int) -> None:
    from dockyard.apiserver.server import serve

    _setup_logging(verbose)
    _run(serve(data_dir=data_dir, bind_address=bind_address, api_port=api_port,
               datastore=datastore, tls_sans=list(tls_san), watch_window=watch_window))


@main.command()
@_server_options
def server(**kwargs: object) -> None:
    """Run the control plane (API server on the embedded store) until SIGTERM/SIGINT."""
    _serve(**kwargs)  # type: ignore[arg-type]


@main.command()
@_server_options
def up(**kwargs: object) -> None:
    """Start a single-node cluster in this process (today: the control plane)."""
    _serve(**kwargs)  # type: ignore[arg-type]


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


if __name__ == "__main__":
    main()
