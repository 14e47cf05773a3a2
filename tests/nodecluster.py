"""Shared pieces of the tests that run real single-node clusters (`dockyard up`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess
from tests.hostcheck import free_pod_cidr


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "",
             interval: float = 0.2) -> Any:
    """Call `check` until it returns something truthy; return that (AssertionError after
    `timeout` seconds, naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@contextmanager
def single_node(data: Path, node: str, *extra_args: str) -> Iterator[ServerProcess]:
    """`dockyard up` in `data` with a pod CIDR no other test uses (as `srv.pod_cidr`); on
    exit the cluster stops and `dockyard cleanup` removes what it made on the host."""
    cidr = free_pod_cidr()
    srv = ServerProcess(data, command="up", extra_args=[
        "--node-name", node, "--pod-cidr", cidr, "--agent-port", "0", "--node-ip",
        "127.0.0.1", *extra_args])
    srv.pod_cidr = cidr  # type: ignore[attr-defined]
    srv.start(timeout=60)
    try:
        yield srv
    finally:
        srv.stop()
        subprocess.run([sys.executable, "-m", "dockyard.cli.main", "cleanup", "--data-dir",
                        str(data)], capture_output=True, timeout=120)
