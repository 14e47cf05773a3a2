"""Shared fixtures: a real `dockyard server` process in a temporary data directory.

The server listens on 127.0.0.1 with a free port; tests talk to it with kubectl, the official
Python client or httpx, exactly as users do. Each test's server is stopped at its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def kubectl_binary() -> str:
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(REPO / ".venv/bin"))
    if not found:
        raise RuntimeError("kubectl not found: run `make setup`")
    return found


@dataclass
class ServerProcess:
    """A `dockyard server` child process and what a client needs to reach it."""

    data_dir: Path
    proc: subprocess.Popen | None = None
    url: str = ""
    token: str = ""
    extra_args: list[str] = field(default_factory=list)
    command: str = "server"  # or "up": control plane and node agent in one process

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def ca(self) -> Path:
        return self.data_dir / "pki" / "ca.crt"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self, timeout: float = 20.0) -> None:
        self.kubeconfig.unlink(missing_ok=True)
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli.main", self.command, "--data-dir",
             str(self.data_dir), "--api-port", "0", "--bind-address", "127.0.0.1",
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()}")
            if self.kubeconfig.exists():
                config = yaml.safe_load(self.kubeconfig.read_text())
                self.url = config["clusters"][0]["cluster"]["server"]
                self.token = config["users"][0]["user"]["token"]
                try:
                    if httpx.get(f"{self.url}/readyz", verify=self.tls()).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls(),
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run([kubectl_binary(), *args], input=input, text=True,
                                capture_output=True, env=env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result


# The API alone: tests of one component run that component themselves.
API_ONLY = ["--disable-scheduler", "--disable-controller-manager"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", extra_args=list(API_ONLY))
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def api_client(server: ServerProcess):  # type: ignore[no-untyped-def]
    """The project's own async client (`dockyard.client.rest.Client`) for `server`."""
    from dockyard.client.rest import Client

    client = Client.from_kubeconfig(server.kubeconfig, user_agent="dockyard-test")
    yield client
    await client.close()
