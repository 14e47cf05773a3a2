"""`dockyard service`: Docker Swarm's service commands over the Kubernetes API."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.edits import Flags, create_spec, update_spec
from dockyard.cli.swarm.inspect import service_json, service_pretty
from dockyard.cli.swarm.options import format_port, parse_scale
from dockyard.cli.swarm.progress import ProgressView
from dockyard.cli.swarm.spec import ServiceSpec
from dockyard.cli.swarm.tables import (
    SERVICE_HEADERS,
    TASK_HEADERS,
    familiar_image,
    render,
    task_rows,
    truncate_id,
)
from dockyard.cli.swarm.tasks import ready_count, tasks_of

if TYPE_CHECKING:  # the API modules load aiohttp: imported when a command runs
    from dockyard.cli.swarm.cluster import Swarm

Obj = dict[str, Any]


def _cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--kubeconfig", default=None, help="Cluster to use (default: "
                     "$KUBECONFIG, then the default data directory's kubeconfig).")(f)
    return click.option("-n", "--namespace", default="default", show_default=True,
                        help="Kubernetes namespace of the services.")(f)


def _flag_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Flags shared by create and update (Docker's names)."""
    options = [
        click.option("--replicas", type=int, help="Number of tasks."),
        click.option("--limit-cpu", help="Limit CPUs (e.g. 0.5)."),
        click.option("--limit-memory", help="Limit memory (e.g. 64M)."),
        click.option("--reserve-cpu", help="Reserve CPUs (the pod's request)."),
        click.option("--reserve-memory", help="Reserve memory (the pod's request)."),
        click.option("--health-cmd", help="Command to run to check health (a shell line)."),
        click.option("--health-interval", help="Time between running the check (e.g. 5s)."),
        click.option("--health-timeout", help="Maximum time to allow one check to run."),
        click.option("--health-retries", type=int,
                     help="Consecutive failures needed to report unhealthy."),
        click.option("--health-start-period", help="Start period: failures do not count."),
        click.option("--no-healthcheck", is_flag=True, help="Disable any health check."),
        click.option("--stop-grace-period",
                     help="Time to wait before force killing a task (default 10s)."),
        click.option("--update-parallelism", help="Tasks updated at once (0: all)."),
        click.option("--update-delay", help="Delay between updates of batches (e.g. 10s)."),
        click.option("--update-failure-action", help="On update failure: pause, continue "
                     "or rollback (applied by this command while it is attached)."),
        click.option("--update-monitor", help="Time to watch each new task for failure."),
        click.option("--update-order", help="stop-first or start-first."),
        click.option("--update-max-failure-ratio", help="Failure rate to tolerate."),
        click.option("--rollback-parallelism", help="Tasks rolled back at once (0: all)."),
        click.option("--rollback-delay", help="Delay between rollbacks of batches."),
        click.option("--rollback-failure-action", help="On rollback failure: pause or "
                     "continue."),
        click.option("--rollback-monitor", help="Time to watch each task for failure."),
        click.option("--rollback-order", help="stop-first or start-first."),
        click.option("--rollback-max-failure-ratio", help="Failure rate to tolerate."),
        click.option("-d", "--detach", is_flag=True,
                     help="Exit immediately instead of waiting for the service to converge."),
        click.option("-q", "--quiet", is_flag=True, help="Suppress progress output."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _flags(kw: dict[str, Any]) -> Flags:
    keys = ("parallelism", "delay", "failure_action", "monitor", "order", "max_failure_ratio")
    return Flags(
        replicas=kw.pop("replicas"), limit_cpu=kw.pop("limit_cpu"),
        limit_memory=kw.pop("limit_memory"), reserve_cpu=kw.pop("reserve_cpu"),
        reserve_memory=kw.pop("reserve_memory"), health_cmd=kw.pop("health_cmd"),
        health_interval=kw.pop("health_interval"), health_timeout=kw.pop("health_timeout"),
        health_retries=kw.pop("health_retries"),
        health_start_period=kw.pop("health_start_period"),
        no_healthcheck=kw.pop("no_healthcheck"), stop_grace_period=kw.pop("stop_grace_period"),
        update={k: kw.pop(f"update_{k}") for k in keys},
        rollback={k: kw.pop(f"rollback_{k}") for k in keys})


def _view(quiet: bool) -> ProgressView:
    if quiet:
        return ProgressView(io.StringIO(), tty=False)
    return ProgressView(sys.stdout, tty=sys.stdout.isatty(),
                        width=shutil.get_terminal_size().columns)


def run(kubeconfig: str | None, namespace: str, body: Any) -> None:
    from dockyard.cli.swarm.cluster import run as run_with_cluster

    run_with_cluster(kubeconfig, namespace, body)


def _warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def _checked(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group("service")
def service() -> None:
    """Manage Swarm-style services (a Deployment plus a Service each)."""


# -- create / update / scale / rollback -----------------------------------------------------


@service.command("create", context_settings={"allow_interspersed_args": False})
@click.option("--name", default=None, help="Service name (default: a generated one).")
@click.option("--mode", default="replicated", show_default=True,
              help="replicated or global (one task per eligible node).")
@click.option("-p", "--publish", multiple=True, help="Publish a port: PUBLISHED:TARGET[/PROTO].")
@click.option("-e", "--env", multiple=True, help="Set an environment variable (K=V).")
@click.option("-l", "--label", multiple=True, help="Service label (K=V).")
@click.option("--constraint", multiple=True,
              help="Placement constraint: node.labels.K==V, node.hostname==H, node.role==R.")
@click.option("--entrypoint", default=None, help="Overwrite the image's entrypoint.")
@_flag_options
@_cluster_options
@click.argument("image")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def create_command(name: str | None, mode: str, publish: tuple[str, ...], env: tuple[str, ...],
                   label: tuple[str, ...], constraint: tuple[str, ...], entrypoint: str | None,
                   image: str, args: tuple[str, ...], kubeconfig: str | None, namespace: str,
                   detach: bool, quiet: bool, **kw: Any) -> None:
    """Create a service: IMAGE [COMMAND] [ARG...]."""
    flags = _flags(kw)
    spec = _checked(lambda: create_spec(
        name=name or _generated_name(), image=image, args=list(args), mode=mode, flags=flags,
        env=list(env), publish=list(publish), constraints=list(constraint),
        labels=list(label), entrypoint=entrypoint, environ=os.environ))
    _checked(lambda: mapping.deployment(spec, namespace, 0))  # refuses what cannot map

    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm import apply
        from dockyard.cli.swarm.rollout import Phase, follow

        d = await apply.create(swarm, spec, _warn)
        click.echo(mapping.swarm_id(d["metadata"]["uid"]))
        if not detach:
            await follow(swarm, spec.name, _view(quiet), Phase("create", spec.update_config))
        return 0

    run(kubeconfig, namespace, body)


def _generated_name() -> str:
    import secrets

    return f"svc-{secrets.token_hex(3)}"


@service.command("update")
@click.option("--image", default=None, help="Service image tag.")
@click.option("--args", default=None, help="Service command args (a shell-quoted line).")
@click.option("--env-add", multiple=True, help="Add or update an environment variable.")
@click.option("--env-rm", multiple=True, help="Remove an environment variable.")
@click.option("--publish-add", multiple=True, help="Add or update a published port.")
@click.option("--publish-rm", multiple=True, help="Remove a published port by its target.")
@click.option("--constraint-add", multiple=True, help="Add or update a constraint.")
@click.option("--constraint-rm", multiple=True, help="Remove a constraint.")
@click.option("--label-add", multiple=True, help="Add or update a service label.")
@click.option("--label-rm", multiple=True, help="Remove a service label by its key.")
@click.option("--force", is_flag=True, help="Replace the tasks even if nothing changed.")
@click.option("--rollback", is_flag=True, help="Roll back to the previous specification.")
@_flag_options
@_cluster_options
@click.argument("name", metavar="SERVICE")
def update_command(name: str, image: str | None, args: str | None, env_add: tuple[str, ...],
                   env_rm: tuple[str, ...], publish_add: tuple[str, ...],
                   publish_rm: tuple[str, ...], constraint_add: tuple[str, ...],
                   constraint_rm: tuple[str, ...], label_add: tuple[str, ...],
                   label_rm: tuple[str, ...], force: bool, rollback: bool,
                   kubeconfig: str | None, namespace: str, detach: bool, quiet: bool,
                   **kw: Any) -> None:
    """Update a service: a rolling update as its update config says."""
    flags = _flags(kw)

    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm import apply
        from dockyard.cli.swarm.rollout import Phase, follow, status_patch

        d = await swarm.find(name)
        if rollback:
            return await _rollback(swarm, d, detach=detach, quiet=quiet)
        old = mapping.spec_of(d)
        assert old is not None
        spec = _checked(lambda: update_spec(
            old, flags=flags, image=image, args=args, env_add=env_add, env_rm=env_rm,
            publish_add=publish_add, publish_rm=publish_rm, constraint_add=constraint_add,
            constraint_rm=constraint_rm, label_add=label_add, label_rm=label_rm, force=force,
            environ=os.environ))
        _checked(lambda: mapping.deployment(spec, namespace, 0))
        phase = Phase("update", spec.update_config)
        await apply.move(swarm, spec, previous=old, config=spec.update_config,
                         status=status_patch("updating", "update in progress", phase.started),
                         warn=_warn)
        click.echo(spec.name)
        if not detach:
            await follow(swarm, spec.name, _view(quiet), phase)
        elif flags.update.get("failure_action") in ("pause", "rollback"):
            _warn(f"--detach: the failure action ({spec.update_config.failure_action}) is "
                  "applied by this command while it follows the update; detached, a failing "
                  "update is only reported by the Deployment's progress deadline")
        return 0

    run(kubeconfig, namespace, body)


async def _rollback(swarm: Swarm, d: Obj, *, detach: bool, quiet: bool) -> int:
    """Back to the previous spec; the current one becomes the previous (Docker toggles)."""
    from dockyard.cli.swarm import apply
    from dockyard.cli.swarm.rollout import Phase, follow, status_patch

    current, previous = mapping.spec_of(d), mapping.previous_of(d)
    assert current is not None
    if previous is None:
        raise click.ClickException(f"service {current.name} does not have a previous spec")
    config = current.rollback_config
    phase = Phase("rollback", config)
    await apply.move(swarm, previous, previous=current, config=config,
                     status=status_patch("rollback_started", "manually requested rollback",
                                         phase.started), warn=_warn)
    click.echo(current.name)
    if not detach:
        view = _view(quiet)
        view.set("rollback", "manually requested rollback")
        await follow(swarm, current.name, view, phase)
    return 0


@service.command("rollback")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@_cluster_options
@click.argument("name", metavar="SERVICE")
def rollback_command(name: str, detach: bool, quiet: bool, kubeconfig: str | None,
                     namespace: str) -> None:
    """Revert a service to its previous specification."""
    async def body(swarm: Swarm) -> int:
        return await _rollback(swarm, await swarm.find(name), detach=detach, quiet=quiet)

    run(kubeconfig, namespace, body)


@service.command("scale")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately.")
@_cluster_options
@click.argument("pairs", nargs=-1, required=True, metavar="SERVICE=REPLICAS...")
def scale_command(pairs: tuple[str, ...], detach: bool, kubeconfig: str | None,
                  namespace: str) -> None:
    """Scale one or more replicated services."""
    wanted = [_checked(lambda p=p: parse_scale(p)) for p in pairs]

    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm.rollout import Phase, follow

        errors = 0
        scaled: list[ServiceSpec] = []
        for ref, replicas in wanted:
            try:
                d = await swarm.find(ref)
            except click.ClickException as exc:
                click.echo(f"Error: {exc.message}", err=True)
                errors += 1
                continue
            spec = mapping.spec_of(d)
            assert spec is not None
            if spec.mode != "replicated":
                click.echo(f"Error: {ref}: scale can only be used with replicated mode",
                           err=True)
                errors += 1
                continue
            spec.replicas = replicas
            await swarm.patch_deployment(spec.name, {
                "metadata": {"annotations": {mapping.ANN_SPEC: spec.to_json()}},
                "spec": {"replicas": replicas}})
            click.echo(f"{ref} scaled to {replicas}")
            scaled.append(spec)
        if not detach:
            for spec in scaled:
                await follow(swarm, spec.name, _view(False), Phase("scale", spec.update_config))
        return 1 if errors else 0

    run(kubeconfig, namespace, body)


# -- reading ---------------------------------------------------------------------------------


@service.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@_cluster_options
def ls_command(quiet: bool, kubeconfig: str | None, namespace: str) -> None:
    """List services (ID NAME MODE REPLICAS IMAGE PORTS)."""
    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm.cluster import PODS, SERVICES

        deployments = await swarm.services()
        pods = (await swarm.client.list(PODS, namespace,
                                        label_selector=mapping.LABEL_SERVICE))["items"]
        services = {s["metadata"]["name"]: s for s in (await swarm.client.list(
            SERVICES, namespace, label_selector=mapping.LABEL_SERVICE))["items"]}
        rows = []
        for d in deployments:
            spec = mapping.spec_of(d)
            assert spec is not None
            mine = [p for p in pods
                    if (p["metadata"].get("labels") or {}).get(mapping.LABEL_SERVICE)
                    == spec.name]
            desired = int(d["spec"].get("replicas") or 0)
            rows.append([truncate_id(mapping.swarm_id(d["metadata"]["uid"])), spec.name,
                         spec.mode, f"{ready_count(mine)}/{desired}",
                         familiar_image(spec.image),
                         ports_column(spec, services.get(spec.name))])
        if quiet:
            for d in deployments:
                click.echo(mapping.swarm_id(d["metadata"]["uid"]))
        else:
            click.echo(render(SERVICE_HEADERS, rows))
        return 0

    run(kubeconfig, namespace, body)


def ports_column(spec: ServiceSpec, svc: Obj | None) -> str:
    """`*:8080->80/tcp`, with the node port really published."""
    if not spec.ports:
        return ""
    live = {p.get("name"): p.get("nodePort") for p in ((svc or {}).get("spec") or {})
            .get("ports") or []}
    shown = []
    for port, wanted in zip(spec.ports, mapping.service_ports(spec), strict=True):
        shown.append(format_port(port, live.get(wanted["name"]) or port.published))
    return ",".join(shown)


@service.command("ps")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@_cluster_options
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
def ps_command(names: tuple[str, ...], no_trunc: bool, quiet: bool, kubeconfig: str | None,
               namespace: str) -> None:
    """List the tasks of one or more services."""
    async def body(swarm: Swarm) -> int:
        node_ids = {v: k for k, v in (await swarm.node_names()).items()}
        node_hosts = {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(
            mapping.HOSTNAME_LABEL, n["metadata"]["name"]) for n in await swarm.nodes()}
        rows: list[list[str]] = []
        for ref in names:
            d = await swarm.find(ref)
            spec = mapping.spec_of(d)
            assert spec is not None
            pods = await swarm.pods(spec.name)
            await swarm.record_slots(pods)
            rows += task_rows(tasks_of(pods, spec.name, spec.mode, node_ids),
                              node_names=node_hosts, no_trunc=no_trunc)
        if quiet:
            for row in rows:
                click.echo(row[0])
        else:
            click.echo(render(TASK_HEADERS, rows))
        return 0

    run(kubeconfig, namespace, body)


def effective_status(d: Obj) -> Obj | None:
    """The recorded update status, shown as completed once the Deployment finished even
    if no attached command was there to record it (`--detach`)."""
    stored = mapping.update_status_of(d)
    if not stored or stored.get("State") not in ("updating", "rollback_started"):
        return stored
    status, spec = d.get("status") or {}, d.get("spec") or {}
    replicas = int(spec.get("replicas") or 0)
    done = (status.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas)
    if not done:
        return stored
    state = "completed" if stored["State"] == "updating" else "rollback_completed"
    return {**stored, "State": state}


@service.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a readable format.")
@_cluster_options
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
def inspect_command(names: tuple[str, ...], pretty: bool, kubeconfig: str | None,
                    namespace: str) -> None:
    """Display detailed information on one or more services."""
    async def body(swarm: Swarm) -> int:
        found = []
        for ref in names:
            d = await swarm.find(ref)
            found.append(service_json(d, await swarm.k8s_service(d["metadata"]["name"]),
                                      effective_status(d)))
        if pretty:
            click.echo("\n".join(service_pretty(info) for info in found), nl=False)
        else:
            click.echo(json.dumps(found, indent=4))
        return 0

    run(kubeconfig, namespace, body)


@service.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", show_default=True,
              help="Number of lines to show from the end of each task's log.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate task IDs.")
@click.option("--raw", is_flag=True, help="Do not prefix the lines.")
@click.option("--kubeconfig", default=None, help="Cluster to use.")
@click.option("--namespace", default="default", show_default=True)
@click.argument("name", metavar="SERVICE")
def logs_command(name: str, follow: bool, tail: str, timestamps: bool, no_trunc: bool,
                 raw: bool, kubeconfig: str | None, namespace: str) -> None:
    """Fetch the logs of every task of a service."""
    if tail != "all" and not tail.isdigit():
        raise click.UsageError(f"--tail: {tail} is not a number or 'all'")

    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm.logs import service_logs

        d = await swarm.find(name)
        await service_logs(swarm, d["metadata"]["name"], follow=follow, tail=tail,
                           timestamps=timestamps, no_trunc=no_trunc, raw=raw)
        return 0

    run(kubeconfig, namespace, body)


@service.command("rm")
@_cluster_options
@click.argument("names", nargs=-1, required=True, metavar="SERVICE...")
def rm_command(names: tuple[str, ...], kubeconfig: str | None, namespace: str) -> None:
    """Remove one or more services (their tasks stop as their grace period allows)."""
    async def body(swarm: Swarm) -> int:
        from dockyard.cli.swarm import apply

        errors = 0
        for ref in names:
            try:
                d = await swarm.find(ref)
            except click.ClickException as exc:
                click.echo(f"Error: {exc.message}", err=True)
                errors += 1
                continue
            await apply.remove(swarm, d["metadata"]["name"])
            click.echo(ref)
        return 1 if errors else 0

    run(kubeconfig, namespace, body)
