"""`service inspect` and `node inspect`: Docker's JSON shape (durations in nanoseconds,
CPUs in nano-CPUs) built from the recorded spec and the live objects, and the `--pretty`
text. Pure."""

from __future__ import annotations

import platform
from typing import Any

from dockyard.api.quantity import parse_quantity
from dockyard.cli.swarm import mapping
from dockyard.cli.swarm.options import format_cpus, format_duration, format_memory
from dockyard.cli.swarm.spec import ServiceSpec, UpdateConfig

Obj = dict[str, Any]
NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return round(seconds * NS)


def _update_config(c: UpdateConfig) -> Obj:
    return {"Parallelism": c.parallelism, "Delay": _ns(c.delay),
            "FailureAction": c.failure_action, "Monitor": _ns(c.monitor),
            "MaxFailureRatio": c.max_failure_ratio, "Order": c.order}


def docker_spec(spec: ServiceSpec) -> Obj:
    container: Obj = {"Image": spec.image, "Init": False,
                      "StopGracePeriod": _ns(spec.stop_grace_period), "DNSConfig": {},
                      "Isolation": "default"}
    if spec.entrypoint:
        container["Command"] = spec.entrypoint
    if spec.args:
        container["Args"] = spec.args
    if spec.env:
        container["Env"] = spec.env
    if h := spec.healthcheck:
        container["Healthcheck"] = {"Test": h.test, "Interval": _ns(h.interval),
                                    "Timeout": _ns(h.timeout), "Retries": h.retries,
                                    "StartPeriod": _ns(h.start_period)}
    r = spec.resources
    limits = {k: v for k, v in (("NanoCPUs", r.limit_nano_cpus),
                                ("MemoryBytes", r.limit_memory)) if v}
    reservations = {k: v for k, v in (("NanoCPUs", r.reserve_nano_cpus),
                                      ("MemoryBytes", r.reserve_memory)) if v}
    template: Obj = {"ContainerSpec": container,
                     "Resources": {"Limits": limits, "Reservations": reservations},
                     "RestartPolicy": {"Condition": "any", "Delay": 5 * NS, "MaxAttempts": 0},
                     "Placement": ({"Constraints": spec.constraints} if spec.constraints
                                   else {}),
                     "ForceUpdate": spec.force_update, "Runtime": "container"}
    mode: Obj = ({"Global": {}} if spec.mode == "global"
                 else {"Replicated": {"Replicas": spec.replicas}})
    out: Obj = {"Name": spec.name, "Labels": spec.labels, "TaskTemplate": template,
                "Mode": mode, "UpdateConfig": _update_config(spec.update_config),
                "RollbackConfig": _update_config(spec.rollback_config),
                "EndpointSpec": {"Mode": "vip" if spec.ports else "dnsrr"}}
    if spec.ports:
        out["EndpointSpec"]["Ports"] = [
            {"Protocol": p.protocol, "TargetPort": p.target,
             **({"PublishedPort": p.published} if p.published else {}),
             "PublishMode": "ingress"} for p in spec.ports]
    return out


def endpoint(spec: ServiceSpec, svc: Obj | None) -> Obj:
    """What the cluster made of the endpoint spec: the node ports really published."""
    out: Obj = {"Spec": docker_spec(spec)["EndpointSpec"]}
    if svc is None:
        return out
    ports = []
    by_name = {p.get("name"): p for p in (svc.get("spec") or {}).get("ports") or []}
    for want, got in zip(mapping.service_ports(spec), spec.ports, strict=True):
        live = by_name.get(want["name"]) or {}
        ports.append({"Protocol": got.protocol, "TargetPort": got.target,
                      "PublishedPort": live.get("nodePort") or 0, "PublishMode": "ingress"})
    if ports:
        out["Ports"] = ports
    ip = (svc.get("spec") or {}).get("clusterIP")
    if ip and ip != "None":
        out["VirtualIPs"] = [{"NetworkID": "", "Addr": ip}]
    return out


def service_json(d: Obj, svc: Obj | None, update_status: Obj | None) -> Obj:
    spec = mapping.spec_of(d)
    assert spec is not None
    meta = d["metadata"]
    out: Obj = {"ID": mapping.swarm_id(meta["uid"]),
                "Version": {"Index": int(meta.get("resourceVersion") or 0)},
                "CreatedAt": meta.get("creationTimestamp", ""),
                "UpdatedAt": (update_status or {}).get("StartedAt")
                or meta.get("creationTimestamp", ""),
                "Spec": docker_spec(spec)}
    if previous := mapping.previous_of(d):
        out["PreviousSpec"] = docker_spec(previous)
    out["Endpoint"] = endpoint(spec, svc)
    if update_status:
        out["UpdateStatus"] = update_status
    return out


def _pretty_update(lines: list[str], title: str, c: UpdateConfig, order_name: str) -> None:
    lines += [f"{title}:", f" Parallelism:\t{c.parallelism}"]
    if c.delay:
        lines.append(f" Delay:\t\t{format_duration(c.delay)}")
    lines += [f" On failure:\t{c.failure_action}",
              f" Monitoring Period: {format_duration(c.monitor)}",
              f" Max failure ratio: {c.max_failure_ratio:g}",
              f" {order_name + ':':<18} {c.order}"]


def service_pretty(info: Obj) -> str:
    """Docker's `service inspect --pretty` text of one `service_json` entry."""
    spec = info["Spec"]
    lines = ["", f"ID:\t\t{info['ID']}", f"Name:\t\t{spec['Name']}"]
    if spec["Labels"]:
        lines.append("Labels:")
        lines += [f" {k}={v}" for k, v in sorted(spec["Labels"].items())]
    if "Global" in spec["Mode"]:
        lines.append("Service Mode:\tGlobal")
    else:
        lines += ["Service Mode:\tReplicated",
                  f" Replicas:\t{spec['Mode']['Replicated']['Replicas']}"]
    if status := info.get("UpdateStatus"):
        lines += ["UpdateStatus:", f" State:\t\t{status.get('State', '')}"]
        if status.get("StartedAt"):
            lines.append(f" Started:\t{status['StartedAt']}")
        if status.get("CompletedAt"):
            lines.append(f" Completed:\t{status['CompletedAt']}")
        lines.append(f" Message:\t{status.get('Message', '')}")
    template = spec["TaskTemplate"]
    lines.append("Placement:")
    if constraints := template["Placement"].get("Constraints"):
        lines.append(f" Constraints:\t[{' '.join(constraints)}]")
    for key, title, order in (("UpdateConfig", "UpdateConfig", "Update order"),
                              ("RollbackConfig", "RollbackConfig", "Rollback order")):
        c = spec[key]
        _pretty_update(lines, title, UpdateConfig(
            parallelism=c["Parallelism"], delay=c["Delay"] / NS,
            failure_action=c["FailureAction"], monitor=c["Monitor"] / NS,
            max_failure_ratio=c["MaxFailureRatio"], order=c["Order"]), order)
    container = template["ContainerSpec"]
    lines += ["", "ContainerSpec:", f" Image:\t\t{container['Image']}"]
    if container.get("Command"):
        lines.append(f" Command:\t{' '.join(container['Command'])}")
    if container.get("Args"):
        lines.append(f" Args:\t\t{' '.join(container['Args'])}")
    if container.get("Env"):
        lines.append(f" Env:\t\t{' '.join(container['Env'])}")
    if h := container.get("Healthcheck"):
        lines += [" Healthcheck:", f"  Interval = {format_duration(h['Interval'] / NS)}",
                  f"  Retries = {h['Retries']}", f"  StartPeriod = "
                  f"{format_duration(h['StartPeriod'] / NS)}",
                  f"  Timeout = {format_duration(h['Timeout'] / NS)}"]
        if h["Test"] and h["Test"][0] == "CMD-SHELL":
            lines.append(f"  Tests:\n\tTest = {h['Test'][0]}\n\tTest = {' '.join(h['Test'][1:])}")
    resources = template["Resources"]
    if resources["Limits"] or resources["Reservations"]:
        lines.append("Resources:")
        for key, title in (("Reservations", "Reservations"), ("Limits", "Limits")):
            if values := resources[key]:
                lines.append(f" {title}:")
                if "NanoCPUs" in values:
                    lines.append(f"  CPU:\t\t{format_cpus(values['NanoCPUs'])}")
                if "MemoryBytes" in values:
                    lines.append(f"  Memory:\t{format_memory(values['MemoryBytes'])}")
    lines.append(f"Endpoint Mode:\t{spec['EndpointSpec']['Mode']}")
    ports = info["Endpoint"].get("Ports") or spec["EndpointSpec"].get("Ports") or []
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines += [f" PublishedPort = {p.get('PublishedPort', 0)}",
                      f"  Protocol = {p['Protocol']}", f"  TargetPort = {p['TargetPort']}",
                      f"  PublishMode = {p['PublishMode']}"]
    return "\n".join(lines) + "\n"


# -- nodes -----------------------------------------------------------------------------------


def node_role(node: Obj, manager_addresses: set[str]) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if mapping.ROLE_LABEL in labels or node_addresses(node) & manager_addresses:
        return "manager"
    return "worker"


def node_addresses(node: Obj) -> set[str]:
    return {a.get("address", "") for a in (node.get("status") or {}).get("addresses") or []
            if a.get("type") == "InternalIP"}


def node_state(node: Obj) -> str:
    return {"True": "ready", "False": "down"}.get(mapping.node_ready(node), "unknown")


def _quantity_int(value: str) -> int:
    try:
        return parse_quantity(value).int_value()
    except ValueError:
        return 0


def node_json(node: Obj, *, role: str, leader: bool, api_port: int) -> Obj:
    meta, status = node["metadata"], node.get("status") or {}
    info = status.get("nodeInfo") or {}
    capacity = status.get("capacity") or {}
    address = sorted(node_addresses(node))[0] if node_addresses(node) else ""
    out: Obj = {
        "ID": mapping.swarm_id(meta["uid"]),
        "Version": {"Index": int(meta.get("resourceVersion") or 0)},
        "CreatedAt": meta.get("creationTimestamp", ""),
        "UpdatedAt": meta.get("creationTimestamp", ""),
        "Spec": {"Labels": meta.get("labels") or {}, "Role": role,
                 "Availability": mapping.availability(node)},
        "Description": {
            "Hostname": (meta.get("labels") or {}).get(mapping.HOSTNAME_LABEL, meta["name"]),
            "Platform": {"Architecture": _docker_arch(info.get("architecture", "")),
                         "OS": info.get("operatingSystem", "")},
            "Resources": {"NanoCPUs": _quantity_int(capacity.get("cpu", "0")) * NS,
                          "MemoryBytes": _quantity_int(capacity.get("memory", "0"))},
            "Engine": {"EngineVersion": info.get("kubeletVersion", ""),
                       "Plugins": [{"Type": "Runtime",
                                    "Name": info.get("containerRuntimeVersion", "")}]},
        },
        "Status": {"State": node_state(node), "Addr": address},
    }
    if role == "manager":
        out["ManagerStatus"] = {"Leader": leader, "Reachability": "reachable",
                                "Addr": f"{address}:{api_port}" if address else ""}
    return out


def _docker_arch(arch: str) -> str:
    reverse = {"amd64": "x86_64", "arm64": "aarch64"}
    return reverse.get(arch, arch or platform.machine())


def node_pretty(info: Obj) -> str:
    desc, status = info["Description"], info["Status"]
    lines = [f"ID:\t\t\t{info['ID']}", f"Hostname:\t\t{desc['Hostname']}",
             f"Joined at:\t\t{info['CreatedAt']}", "Status:",
             f" State:\t\t\t{status['State'].capitalize()}",
             f" Availability:\t\t{info['Spec']['Availability'].capitalize()}",
             f" Address:\t\t{status['Addr']}"]
    if manager := info.get("ManagerStatus"):
        lines += ["Manager Status:", f" Address:\t\t{manager['Addr']}",
                  f" Raft Status:\t\t{manager['Reachability'].capitalize()}",
                  f" Leader:\t\t{'Yes' if manager['Leader'] else 'No'}"]
    if labels := info["Spec"]["Labels"]:
        lines.append("Labels:")
        lines += [f" - {k}={v}" for k, v in sorted(labels.items())]
    resources = desc["Resources"]
    lines += ["Platform:", f" Operating System:\t{desc['Platform']['OS']}",
              f" Architecture:\t\t{desc['Platform']['Architecture']}", "Resources:",
              f" CPUs:\t\t\t{resources['NanoCPUs'] // NS}",
              f" Memory:\t\t{format_memory(resources['MemoryBytes'])}", "Plugins:"]
    for plugin in desc["Engine"]["Plugins"]:
        lines.append(f" {plugin['Type']}:\t\t{plugin['Name']}")
    lines.append(f"Engine Version:\t\t{desc['Engine']['EngineVersion']}")
    return "\n".join(lines) + "\n"
