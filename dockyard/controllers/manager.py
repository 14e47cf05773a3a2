"""The controller manager: every controller in one process, sharing informers, behind one
leader-elected Lease (`kube-system/kube-controller-manager`).

Controllers are named in `CONTROLLERS` (name → "module:Class"); each is built with the shared
`InformerFactory` and `EventRecorder` and runs its own workers. Only the leader runs them;
a standby campaigns and takes over within the lease duration when the leader dies.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import uuid
from typing import Any

from dockyard.client.controller import Controller
from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.leaderelection import LeaderElector
from dockyard.client.rest import Client

log = logging.getLogger("dockyard.controller-manager")

CONTROLLERS: dict[str, str] = {
    "replicaset": "dockyard.controllers.replicaset:ReplicaSetController",
    "deployment": "dockyard.controllers.deployment:DeploymentController",
    "job": "dockyard.controllers.job:JobController",
    "ttl-after-finished": "dockyard.controllers.ttlafterfinished:TTLAfterFinishedController",
    "nodelifecycle": "dockyard.controllers.nodelifecycle:NodeLifecycleController",
    "taint-eviction": "dockyard.controllers.taintmanager:TaintEvictionController",
    "endpoints": "dockyard.controllers.endpoints:EndpointsController",
    "endpointslice": "dockyard.controllers.endpointslice:EndpointSliceController",
    "podgc": "dockyard.controllers.podgc:PodGCController",
    "garbagecollector": "dockyard.controllers.garbagecollector:GarbageCollector",
    "namespace": "dockyard.controllers.namespace:NamespaceController",
    "nodeipam": "dockyard.controllers.nodeipam:NodeIpamController",
}


def _load(path: str) -> type[Controller]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def identity() -> str:
    """`host_pid_random`: unique per candidate, and says which process holds a lease."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class ControllerManager:
    def __init__(self, client: Client, *, enabled: list[str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> None:
        self.client = client
        self.enabled = enabled or list(CONTROLLERS)
        unknown = set(self.enabled) - set(CONTROLLERS)
        if unknown:
            raise ValueError(f"unknown controllers {sorted(unknown)}; known: "
                             f"{', '.join(CONTROLLERS)}")
        self.options = options or {}

    async def run(self) -> None:
        """Build and run the enabled controllers until cancelled."""
        factory = InformerFactory(self.client)
        recorder = EventRecorder(self.client, "controller-manager")
        controllers = [
            _load(CONTROLLERS[name])(self.client, factory, recorder,  # type: ignore[call-arg]
                                     **self.options.get(name, {}))
            for name in self.enabled
        ]
        recorder.start()
        factory.start()
        tasks = [asyncio.create_task(c.run(), name=f"controller-{c.name}") for c in controllers]
        log.info("running controllers: %s", ", ".join(self.enabled))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await factory.stop()
            await recorder.stop()


async def run_elected(client: Client, lease: str, work: Any, *, leader_elect: bool = True,
                      lease_duration: float = 15.0, renew_deadline: float = 10.0,
                      retry_period: float = 2.0) -> None:
    """Run `work()` only while holding `kube-system/<lease>` (or always, without election)."""
    if not leader_elect:
        await work()
        return
    elector = LeaderElector(client, name=lease, identity=identity(),
                            lease_duration=lease_duration, renew_deadline=renew_deadline,
                            retry_period=retry_period)
    await elector.run(work)
