"""The scheduler: queue, cache, framework and plugins; `Scheduler` is the component."""

from dockyard.scheduler.scheduler import Scheduler

__all__ = ["Scheduler"]
