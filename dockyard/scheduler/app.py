"""The scheduler as a runnable component: its informers, event recorder and leader election.

`run_scheduler` is what `dockyard scheduler` and the in-process control plane call; the
scheduling logic itself is `dockyard.scheduler.scheduler.Scheduler`.
"""

from __future__ import annotations

from typing import Any

from dockyard.client.events import EventRecorder
from dockyard.client.factory import InformerFactory
from dockyard.client.rest import Client
from dockyard.controllers.manager import run_elected


async def run_scheduler(client: Client, *, leader_elect: bool = True,
                        lease_duration: float = 15.0, renew_deadline: float = 10.0,
                        retry_period: float = 2.0, **options: Any) -> None:
    from dockyard.scheduler.scheduler import Scheduler

    async def work() -> None:
        factory = InformerFactory(client)
        recorder = EventRecorder(client, "default-scheduler")
        scheduler = Scheduler(client, factory, recorder, **options)
        recorder.start()
        factory.start()
        try:
            await scheduler.run()
        finally:
            await factory.stop()
            await recorder.stop()

    await run_elected(client, "kube-scheduler", work, leader_elect=leader_elect,
                      lease_duration=lease_duration, renew_deadline=renew_deadline,
                      retry_period=retry_period)
