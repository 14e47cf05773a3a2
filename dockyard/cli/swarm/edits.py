"""Flags → spec: `service create` builds a ServiceSpec, `service update` changes one. Pure,
so every flag's meaning is unit-tested without a cluster; errors are ValueError."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dockyard.cli.swarm.options import (
    env_key,
    parse_constraint,
    parse_cpus,
    parse_duration,
    parse_env,
    parse_label,
    parse_memory,
    parse_publish,
)
from dockyard.cli.swarm.spec import (
    FAILURE_ACTIONS,
    MODES,
    ORDERS,
    HealthCheck,
    PortConfig,
    ServiceSpec,
    UpdateConfig,
)


@dataclass
class Flags:
    """The flags `service create` and `service update` share (None: not given)."""

    replicas: int | None = None
    limit_cpu: str | None = None
    limit_memory: str | None = None
    reserve_cpu: str | None = None
    reserve_memory: str | None = None
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: int | None = None
    health_start_period: str | None = None
    no_healthcheck: bool = False
    stop_grace_period: str | None = None
    update: dict[str, str | None] = field(default_factory=dict)  # parallelism, delay, ...
    rollback: dict[str, str | None] = field(default_factory=dict)


def _update_config(base: UpdateConfig, values: Mapping[str, str | None], what: str
                   ) -> UpdateConfig:
    c = UpdateConfig(**vars(base))
    if (v := values.get("parallelism")) is not None:
        if not str(v).isdigit():
            raise ValueError(f"--{what}-parallelism: {v} is not a non-negative number")
        c.parallelism = int(v)
    if (v := values.get("delay")) is not None:
        c.delay = parse_duration(v)
    if (v := values.get("monitor")) is not None:
        c.monitor = parse_duration(v)
    if (v := values.get("failure_action")) is not None:
        allowed = FAILURE_ACTIONS if what == "update" else ("pause", "continue")
        if v not in allowed:
            raise ValueError(f"--{what}-failure-action: {v!r} is not one of "
                             f"{', '.join(allowed)}")
        c.failure_action = v
    if (v := values.get("order")) is not None:
        if v not in ORDERS:
            raise ValueError(f"--{what}-order: {v!r} is not one of {', '.join(ORDERS)}")
        c.order = v
    if (v := values.get("max_failure_ratio")) is not None:
        ratio = float(v)
        if not 0 <= ratio <= 1:
            raise ValueError(f"--{what}-max-failure-ratio: {v} is not between 0 and 1")
        c.max_failure_ratio = ratio
    return c


def _apply_common(spec: ServiceSpec, flags: Flags) -> None:
    if flags.replicas is not None:
        if spec.mode == "global":
            raise ValueError("replicas can only be used with replicated mode")
        if flags.replicas < 0:
            raise ValueError("--replicas must not be negative")
        spec.replicas = flags.replicas
    r = spec.resources
    if flags.limit_cpu is not None:
        r.limit_nano_cpus = parse_cpus(flags.limit_cpu)
    if flags.limit_memory is not None:
        r.limit_memory = parse_memory(flags.limit_memory)
    if flags.reserve_cpu is not None:
        r.reserve_nano_cpus = parse_cpus(flags.reserve_cpu)
    if flags.reserve_memory is not None:
        r.reserve_memory = parse_memory(flags.reserve_memory)
    if flags.no_healthcheck:
        if flags.health_cmd:
            raise ValueError("--no-healthcheck conflicts with --health-* options")
        spec.healthcheck = HealthCheck(test=["NONE"])
    elif flags.health_cmd is not None or any(v is not None for v in (
            flags.health_interval, flags.health_timeout, flags.health_retries,
            flags.health_start_period)):
        h = spec.healthcheck if spec.healthcheck and spec.healthcheck.test != ["NONE"] \
            else None
        if flags.health_cmd is None and h is None:
            raise ValueError("--health-interval, --health-timeout, --health-retries and "
                             "--health-start-period need a --health-cmd")
        h = HealthCheck(**vars(h)) if h else HealthCheck(test=[])
        if flags.health_cmd is not None:
            h.test = ["CMD-SHELL", flags.health_cmd]
        if flags.health_interval is not None:
            h.interval = parse_duration(flags.health_interval)
        if flags.health_timeout is not None:
            h.timeout = parse_duration(flags.health_timeout)
        if flags.health_retries is not None:
            h.retries = flags.health_retries
        if flags.health_start_period is not None:
            h.start_period = parse_duration(flags.health_start_period)
        spec.healthcheck = h
    if flags.stop_grace_period is not None:
        spec.stop_grace_period = parse_duration(flags.stop_grace_period)
    spec.update_config = _update_config(spec.update_config, flags.update, "update")
    spec.rollback_config = _update_config(spec.rollback_config, flags.rollback, "rollback")


def create_spec(*, name: str, image: str, args: Sequence[str], mode: str, flags: Flags,
                env: Sequence[str], publish: Sequence[str], constraints: Sequence[str],
                labels: Sequence[str], entrypoint: str | None,
                environ: Mapping[str, str]) -> ServiceSpec:
    if mode not in MODES:
        raise ValueError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
    spec = ServiceSpec(name=name, image=image, args=list(args), mode=mode)
    if entrypoint:
        spec.entrypoint = shlex.split(entrypoint)
    spec.env = [e for item in env if (e := parse_env(item, environ)) is not None]
    spec.ports = [parse_publish(p) for p in publish]
    spec.constraints = [str(parse_constraint(c)) for c in constraints]
    spec.labels = dict(parse_label(item) for item in labels)
    if mode == "global" and flags.replicas is not None:
        raise ValueError("replicas can only be used with replicated mode")
    _apply_common(spec, flags)
    return spec


def _same_port(a: PortConfig, b: PortConfig) -> bool:
    return a.target == b.target and a.protocol == b.protocol


def update_spec(old: ServiceSpec, *, flags: Flags, image: str | None = None,
                args: str | None = None, env_add: Sequence[str] = (),
                env_rm: Sequence[str] = (), publish_add: Sequence[str] = (),
                publish_rm: Sequence[str] = (), constraint_add: Sequence[str] = (),
                constraint_rm: Sequence[str] = (), label_add: Sequence[str] = (),
                label_rm: Sequence[str] = (), force: bool = False,
                environ: Mapping[str, str]) -> ServiceSpec:
    """`old` with the update flags applied, as `docker service update` applies them."""
    spec = old.copy()
    if image is not None:
        spec.image = image
    if args is not None:
        spec.args = shlex.split(args)
    removed = set(env_rm)
    added = [e for item in env_add if (e := parse_env(item, environ)) is not None]
    removed |= {env_key(e) for e in added}
    spec.env = [e for e in spec.env if env_key(e) not in removed] + added
    for item in publish_rm:
        target = parse_publish(item)
        spec.ports = [p for p in spec.ports
                      if not (p.target == target.target or p.published == target.target)]
    for item in publish_add:
        port = parse_publish(item)
        spec.ports = [p for p in spec.ports if not _same_port(p, port)] + [port]
    rm = {str(parse_constraint(c)) for c in constraint_rm}
    spec.constraints = [c for c in spec.constraints if c not in rm]
    for c in constraint_add:
        text = str(parse_constraint(c))
        if text not in spec.constraints:
            spec.constraints.append(text)
    for key in label_rm:
        spec.labels.pop(key, None)
    spec.labels.update(dict(parse_label(item) for item in label_add))
    _apply_common(spec, flags)
    if force:
        spec.force_update += 1
    return spec
