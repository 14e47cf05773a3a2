"""The Swarm-level service spec: what `docker service create/update` records, as data.

It is stored whole as JSON in an annotation of the Deployment (`mapping.ANN_SPEC`), so a later
`service update`, `inspect` or `rollback` reads back exactly what the user asked for, not a
reconstruction from Kubernetes fields. Durations are seconds (float), sizes bytes, CPUs
nano-CPUs, as Docker's API keeps them (integers where Docker has integers).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

MODES = ("replicated", "global")
FAILURE_ACTIONS = ("pause", "continue", "rollback")
ORDERS = ("stop-first", "start-first")


@dataclass
class PortConfig:
    """One published port: `--publish published:target/protocol` (ingress mode)."""

    target: int
    published: int | None = None  # None: the cluster chooses (`--publish 80`)
    protocol: str = "tcp"


@dataclass
class HealthCheck:
    """`--health-cmd` and friends; test is Docker's form (["CMD-SHELL", cmd])."""

    test: list[str]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass
class UpdateConfig:
    """`--update-*` (and, with the same shape, `--rollback-*`); Docker's defaults."""

    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "pause"
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: str = "stop-first"


@dataclass
class Resources:
    limit_nano_cpus: int = 0
    limit_memory: int = 0
    reserve_nano_cpus: int = 0
    reserve_memory: int = 0


@dataclass
class ServiceSpec:
    name: str
    image: str
    args: list[str] = field(default_factory=list)  # IMAGE [COMMAND] [ARG...] → the image's Cmd
    entrypoint: list[str] = field(default_factory=list)  # --entrypoint
    env: list[str] = field(default_factory=list)  # K=V, in order
    labels: dict[str, str] = field(default_factory=dict)  # --label (the service's)
    mode: str = "replicated"
    replicas: int = 1  # replicated mode only
    ports: list[PortConfig] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    healthcheck: HealthCheck | None = None
    update_config: UpdateConfig = field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = field(default_factory=UpdateConfig)
    stop_grace_period: float = 10.0
    force_update: int = 0  # --force: a new value replaces every task

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServiceSpec:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        data = dict(data)
        data["ports"] = [PortConfig(**p) for p in data.get("ports") or []]
        data["resources"] = Resources(**(data.get("resources") or {}))
        health = data.get("healthcheck")
        data["healthcheck"] = HealthCheck(**health) if health else None
        data["update_config"] = UpdateConfig(**(data.get("update_config") or {}))
        data["rollback_config"] = UpdateConfig(**(data.get("rollback_config") or {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def copy(self) -> ServiceSpec:
        return ServiceSpec.from_dict(dataclasses.asdict(self))
