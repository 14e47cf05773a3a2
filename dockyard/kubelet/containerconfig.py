"""From a pod's container spec to the runtime's ContainerConfig (kuberuntime's
generateContainerConfig).

What the kubelet decides, with Kubernetes' rules and messages:
- the environment: envFrom (ConfigMaps/Secrets, with prefix), then env (values with $(VAR)
  references, the downward API, resource fields, ConfigMap/Secret keys), later names
  replacing earlier ones; the image's Env comes first and is overridden by the pod's;
- argv: `command` replaces the image's Entrypoint and drops its Cmd, `args` replaces Cmd,
  both with $(VAR) expanded from the container's environment;
- cgroup values from `resources` (MilliCPUToShares, MilliCPUToQuota, memory limit) and the
  OOM score adjustment of the pod's QoS class;
- the security context, pod level merged under container level.

One deliberate difference: a pod that names no seccomp profile gets RuntimeDefault (Docker's
default, and Kubernetes' own default with `--seccomp-default`), not Unconfined.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dockyard.api.meta import as_dict, as_list, is_env_var_name
from dockyard.api.pod import compute_qos_class
from dockyard.api.quantity import Quantity, QuantityError, parse_quantity
from dockyard.runtime.cri import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerConfig,
    ImageSpec,
    Mount,
    Resources,
    Security,
)

Obj = dict[str, Any]
GetObject = Callable[[str, str, str], Awaitable[Obj | None]]  # (kind, namespace, name) -> obj

DEFAULT_SECCOMP_ROOT = Path("/var/lib/kubelet/seccomp")  # <kubelet root>/seccomp
MIN_SHARES = 2
SHARES_PER_CPU = 1024
QUOTA_PERIOD = 100_000  # microseconds
MIN_QUOTA = 1000
GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000
MAX_HOSTNAME = 63


class ContainerConfigError(Exception):
    """The container cannot be created as specified (waiting reason
    CreateContainerConfigError), e.g. `configmap "app" not found`."""

    reason = "CreateContainerConfigError"


async def container_config(pod: Obj, container: Obj, *, image: ImageSpec, image_config: Obj,
                           mounts: list[Mount], attempt: int, log_path: Path, pod_ip: str,
                           host_ip: str, node_name: str, get_object: GetObject,
                           pids_limit: int | None,
                           seccomp_root: Path | None = None) -> ContainerConfig:
    """The runtime's view of one attempt of `container`. Raises ContainerConfigError."""
    meta = as_dict(pod.get("metadata"))
    env = await environment(pod, container, pod_ip=pod_ip, host_ip=host_ip,
                            node_name=node_name, get_object=get_object)
    security = security_of(pod, container, seccomp_root or DEFAULT_SECCOMP_ROOT)
    verify_run_as_non_root(pod, container, image.user)
    return ContainerConfig(
        name=str(container.get("name") or ""),
        attempt=attempt,
        image=image,
        argv=tuple(command_line(container, image_config, env)),
        env=tuple(merge_env(_strings(image_config.get("Env")),
                            [f"{k}={v}" for k, v in env.items()])),
        working_dir=str(container.get("workingDir") or image_config.get("WorkingDir") or ""),
        mounts=tuple(mounts),
        resources=resources_of(pod, container, pids_limit),
        security=security,
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
        log_path=log_path,
        hostname=pod_hostname(pod),
        labels={
            LABEL_POD_NAME: str(meta.get("name") or ""),
            LABEL_POD_NAMESPACE: str(meta.get("namespace") or ""),
            LABEL_POD_UID: str(meta.get("uid") or ""),
            LABEL_CONTAINER_NAME: str(container.get("name") or ""),
        },
    )


# ------------------------------------------------------------------------- $(VAR) expansion


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' expansion: `$(VAR)` → its value, `$$` → `$`, a reference to an unknown
    variable (or an unterminated `$(`) is kept as written."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:close]
            value = lookup(name)
            out.append(value if value is not None else f"$({name})")
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def command_line(container: Obj, image_config: Obj, env: dict[str, str]) -> list[str]:
    """command + args with the image's Entrypoint/Cmd as defaults (Docker's and containerd's
    merge); raises when nothing is left to run."""
    command = [expand(str(a), env.get) for a in as_list(container.get("command"))]
    args = [expand(str(a), env.get) for a in as_list(container.get("args"))]
    if not command:
        if not args:
            args = _strings(image_config.get("Cmd"))
        entrypoint = _strings(image_config.get("Entrypoint"))
        if entrypoint != [""]:
            command = entrypoint
    if not command and not args:
        err = ContainerConfigError("no command specified")
        err.reason = "CreateContainerError"
        raise err
    return command + args


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """`NAME=value` lists merged: a later name replaces an earlier one in its place."""
    merged: dict[str, str] = {}
    for entry in [*base, *overrides]:
        merged[entry.partition("=")[0]] = entry
    return list(merged.values())


# ------------------------------------------------------------------------------ environment


async def environment(pod: Obj, container: Obj, *, pod_ip: str, host_ip: str, node_name: str,
                      get_object: GetObject) -> dict[str, str]:
    """makeEnvironmentVariables: envFrom, then env, in order; values of `env` may refer to
    variables defined before them."""
    namespace = str(as_dict(pod.get("metadata")).get("namespace") or "default")
    cache: dict[tuple[str, str], Obj | None] = {}

    async def fetch(kind: str, name: str) -> Obj | None:
        if (kind, name) not in cache:
            try:
                cache[(kind, name)] = await get_object(kind, namespace, name)
            except Exception as err:  # the API is unreachable: retry with back-off
                raise ContainerConfigError(
                    f"couldn't get {kind.lower()} {namespace}/{name}: {err}") from err
        return cache[(kind, name)]

    env: dict[str, str] = {}
    for source in as_list(container.get("envFrom")):
        source = as_dict(source)
        prefix = str(source.get("prefix") or "")
        for kind, ref in (("ConfigMap", source.get("configMapRef")),
                          ("Secret", source.get("secretRef"))):
            if not isinstance(ref, dict):
                continue
            name = str(ref.get("name") or "")
            obj = await fetch(kind, name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
            for key, value in sorted(_data(kind, obj).items()):
                if not is_env_var_name(prefix + key):
                    env[prefix + key] = value
    for var in as_list(container.get("env")):
        var = as_dict(var)
        name = str(var.get("name") or "")
        value_from = var.get("valueFrom")
        if var.get("value"):
            env[name] = expand(str(var["value"]), env.get)
        elif isinstance(value_from, dict):
            value = await _value_from(pod, container, value_from, namespace, fetch,
                                      pod_ip=pod_ip, host_ip=host_ip, node_name=node_name)
            if value is None:  # an optional reference that is missing: no variable
                continue
            env[name] = value
        else:
            env[name] = ""
    return env


async def _value_from(pod: Obj, container: Obj, source: Obj, namespace: str,
                      fetch: Callable[[str, str], Awaitable[Obj | None]], *, pod_ip: str,
                      host_ip: str, node_name: str) -> str | None:
    if isinstance(source.get("fieldRef"), dict):
        path = str(source["fieldRef"].get("fieldPath") or "")
        return field_value(pod, path, pod_ip=pod_ip, host_ip=host_ip, node_name=node_name)
    if isinstance(source.get("resourceFieldRef"), dict):
        return resource_value(pod, container, source["resourceFieldRef"])
    for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = source.get(field)
        if not isinstance(ref, dict):
            continue
        name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
        optional = bool(ref.get("optional"))
        obj = await fetch(kind, name)
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        data = _data(kind, obj)
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
        return data[key]
    return ""


def _data(kind: str, obj: Obj) -> dict[str, str]:
    """The string values of a ConfigMap (`data`: the kubelet ignores binaryData for the
    environment) or a Secret (`data` decoded from base64)."""
    if kind == "ConfigMap":
        return {str(k): str(v) for k, v in as_dict(obj.get("data")).items()}
    out = {str(k): str(v) for k, v in as_dict(obj.get("stringData")).items()}
    for key, value in as_dict(obj.get("data")).items():
        try:
            raw = base64.b64decode(str(value), validate=False)
        except ValueError:
            raw = b""
        out[str(key)] = raw.decode("utf-8", errors="replace")
    return out


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def field_value(pod: Obj, path: str, *, pod_ip: str, host_ip: str, node_name: str) -> str:
    """The downward API's fieldRef values (podFieldSelectorRuntimeValue)."""
    meta, spec = as_dict(pod.get("metadata")), as_dict(pod.get("spec"))
    status = as_dict(pod.get("status"))
    match = _SUBSCRIPT.match(path)
    if match:
        return str(as_dict(meta.get(match.group(1))).get(match.group(2), ""))
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".")[1]) or "")
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(as_dict(meta.get(path.split(".")[1])))
    if path == "spec.nodeName":
        return str(spec.get("nodeName") or node_name)
    if path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName") or "")
    if path == "status.hostIP":
        return host_ip
    if path == "status.hostIPs":
        return _ip_list(host_ip, status.get("hostIPs"))
    if path == "status.podIP":
        return pod_ip
    if path == "status.podIPs":
        return _ip_list(pod_ip, status.get("podIPs"))
    raise ContainerConfigError(f"unsupported fieldPath: {path}")


def _ip_list(first: str, recorded: Any) -> str:
    ips = [first] if first else []
    ips += [str(as_dict(e).get("ip")) for e in as_list(recorded)
            if as_dict(e).get("ip") and as_dict(e).get("ip") != first]
    return ",".join(ips)


def format_map(values: dict[str, Any]) -> str:
    """Go's fieldpath.FormatMap: sorted `key="value"` lines."""
    return "\n".join(f"{k}={_go_quote(str(values[k]))}" for k in sorted(values))


def _go_quote(text: str) -> str:
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
               "\b": "\\b", "\f": "\\f", "\v": "\\v"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def resource_value(pod: Obj, container: Obj, ref: Obj) -> str:
    """resourceFieldRef: the container's request or limit in units of `divisor`; a missing
    limit is the node's allocatable amount, as the kubelet substitutes."""
    target = container
    if ref.get("containerName"):
        spec = as_dict(pod.get("spec"))
        target = next((as_dict(c) for c in [*as_list(spec.get("containers")),
                                            *as_list(spec.get("initContainers"))]
                       if as_dict(c).get("name") == ref["containerName"]), None) or {}
    name = str(ref.get("resource") or "")
    bucket, _, resource = name.partition(".")
    if bucket not in ("limits", "requests") or resource not in (
            "cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f"unsupported container resource : {name}")
    try:
        divisor = parse_quantity(ref.get("divisor") or "1")
        if divisor.is_zero():
            divisor = parse_quantity("1")
        raw = as_dict(as_dict(target.get("resources")).get(bucket)).get(resource)
        amount = parse_quantity(raw) if raw is not None else None
    except QuantityError as err:
        raise ContainerConfigError(f"invalid quantity in {name}: {err}") from err
    if amount is None:
        amount = _node_allocatable(resource) if bucket == "limits" else parse_quantity("0")
    if resource == "cpu":
        return str(-(-amount.milli_value() // divisor.milli_value()))
    return str(-(-amount.int_value() // divisor.int_value()))


def _node_allocatable(resource: str) -> Quantity:
    if resource == "cpu":
        return parse_quantity(os.cpu_count() or 1)
    if resource == "memory":
        return parse_quantity(memory_capacity())
    return parse_quantity(shutil.disk_usage("/").total)


# -------------------------------------------------------------------------------- resources


def milli_cpu_to_shares(milli: int) -> int:
    """Kubernetes' MilliCPUToShares: 1000m → 1024, never below 2."""
    if milli == 0:
        return MIN_SHARES
    return max(MIN_SHARES, milli * SHARES_PER_CPU // 1000)


def milli_cpu_to_quota(milli: int, period: int = QUOTA_PERIOD) -> int:
    """Kubernetes' MilliCPUToQuota: 0 (no limit) or at least 1 ms per period."""
    if milli == 0:
        return 0
    return max(MIN_QUOTA, milli * period // 1000)


def resources_of(pod: Obj, container: Obj, pids_limit: int | None) -> Resources:
    res = as_dict(container.get("resources"))
    requests, limits = as_dict(res.get("requests")), as_dict(res.get("limits"))
    cpu_request = _quantity(requests.get("cpu"))
    cpu_limit = _quantity(limits.get("cpu"))
    memory_limit = _quantity(limits.get("memory"))
    if cpu_request is None and cpu_limit is not None:
        shares = milli_cpu_to_shares(cpu_limit.milli_value())
    else:
        shares = milli_cpu_to_shares(cpu_request.milli_value() if cpu_request else 0)
    quota = milli_cpu_to_quota(cpu_limit.milli_value()) if cpu_limit else 0
    memory = memory_limit.int_value() if memory_limit else 0
    return Resources(cpu_shares=shares, cpu_quota=quota or None, cpu_period=QUOTA_PERIOD,
                     memory_limit=memory or None, pids_limit=pids_limit,
                     oom_score_adj=oom_score_adj(pod, container, memory_capacity()))


def oom_score_adj(pod: Obj, container: Obj, capacity: int) -> int:
    """GetContainerOOMScoreAdjust: Guaranteed and node-critical pods last, BestEffort
    first, Burstable by the share of the node's memory they request."""
    spec = as_dict(pod.get("spec"))
    if spec.get("priorityClassName") == "system-node-critical":
        return GUARANTEED_OOM_SCORE_ADJ
    qos = compute_qos_class(spec)
    if qos == "Guaranteed":
        return GUARANTEED_OOM_SCORE_ADJ
    if qos == "BestEffort":
        return BEST_EFFORT_OOM_SCORE_ADJ
    request = _quantity(as_dict(as_dict(container.get("resources")).get("requests"))
                        .get("memory"))
    adjust = 1000 - (1000 * (request.int_value() if request else 0)) // max(capacity, 1)
    if adjust < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if adjust == BEST_EFFORT_OOM_SCORE_ADJ:
        return adjust - 1
    return adjust


def memory_capacity() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 30


def _quantity(raw: Any) -> Quantity | None:
    if raw is None:
        return None
    try:
        q = parse_quantity(raw)
    except QuantityError:
        return None
    return q if not q.is_zero() else None


# --------------------------------------------------------------------------------- security


def security_of(pod: Obj, container: Obj, seccomp_root: Path = DEFAULT_SECCOMP_ROOT
                ) -> Security:
    """The container's security context over the pod's (DetermineEffectiveSecurityContext)."""
    pod_sc = as_dict(as_dict(pod.get("spec")).get("securityContext"))
    sc = as_dict(container.get("securityContext"))
    caps = as_dict(sc.get("capabilities"))
    groups = [int(g) for g in as_list(pod_sc.get("supplementalGroups"))]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    run_as_user = _first("runAsUser", sc, pod_sc)
    run_as_group = _first("runAsGroup", sc, pod_sc)
    return Security(
        privileged=bool(sc.get("privileged")),
        run_as_user=int(run_as_user) if run_as_user is not None else None,
        run_as_group=int(run_as_group) if run_as_group is not None else None,
        supplemental_groups=tuple(dict.fromkeys(groups)),
        capabilities_add=tuple(str(c) for c in as_list(caps.get("add"))),
        capabilities_drop=tuple(str(c) for c in as_list(caps.get("drop"))),
        read_only_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        seccomp=_seccomp(as_dict(_first("seccompProfile", sc, pod_sc)), seccomp_root),
        masked_paths=sc.get("procMount") != "Unmasked",
    )


def _first(key: str, container_sc: Obj, pod_sc: Obj) -> Any:
    """A container's setting if it has one, else the pod's."""
    value = container_sc.get(key)
    return value if value is not None else pod_sc.get(key)


def _seccomp(profile: Obj, root: Path) -> str:
    kind = profile.get("type")
    if kind == "Unconfined":
        return "Unconfined"
    if kind == "Localhost":
        relative = str(profile.get("localhostProfile") or "")
        if not relative or ".." in relative.split("/") or relative.startswith("/"):
            raise ContainerConfigError(
                f"invalid localhostProfile {relative!r}: a path relative to {root}")
        return str(root / relative)
    return "RuntimeDefault"  # RuntimeDefault, or no profile named (see the module docstring)


def verify_run_as_non_root(pod: Obj, container: Obj, image_user: str) -> None:
    """runAsNonRoot: refuse a container that would run as uid 0 (or as a user name the
    kubelet cannot check)."""
    pod_sc = as_dict(as_dict(pod.get("spec")).get("securityContext"))
    sc = as_dict(container.get("securityContext"))
    if not _first("runAsNonRoot", sc, pod_sc):
        return
    where = f'(pod: "{_format_pod(pod)}", container: {container.get("name")})'
    run_as_user = _first("runAsUser", sc, pod_sc)
    if run_as_user is not None:
        if int(run_as_user) == 0:
            raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    user = (image_user or "").partition(":")[0]
    if not user or (user.isdigit() and int(user) == 0):
        raise ContainerConfigError(f"container has runAsNonRoot and image will run as root "
                                   f"{where}")
    if not user.isdigit():
        raise ContainerConfigError(f"container has runAsNonRoot and image has non-numeric user "
                                   f"({user}), cannot verify user is non-root {where}")


def pod_hostname(pod: Obj) -> str:
    """spec.hostname or the pod's name, cut to 63 characters (GeneratePodHostNameAndDomain);
    the node's name for pods on the host's network."""
    spec = as_dict(pod.get("spec"))
    if spec.get("hostNetwork"):
        return socket.gethostname()
    name = str(as_dict(pod.get("metadata")).get("name") or "")
    hostname = str(spec.get("hostname") or name)
    if len(hostname) > MAX_HOSTNAME:
        hostname = hostname[:MAX_HOSTNAME].rstrip("-.")
    return hostname


def _format_pod(pod: Obj) -> str:
    meta = as_dict(pod.get("metadata"))
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def _strings(value: Any) -> list[str]:
    return [str(v) for v in as_list(value)]
