"""Rows for every served kind but Pod, each a port of the matching printers.go `printX`.

The apiserver always prints with `Wide: true` (kubectl hides priority-1 columns itself), so
every cell function returns the wide cells too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dockyard.apiserver.printers.columns import (
    AGE,
    CONTAINERS,
    IMAGES,
    NAME,
    Column,
    Printer,
    wide,
)
from dockyard.apiserver.printers.format import (
    NONE,
    UNKNOWN,
    format_label_selector,
    format_labels,
    get,
    human_duration,
    join_host_port,
    layout_containers,
    list_with_more,
    parse_time,
    selector_string,
    since,
)

Obj = dict[str, Any]


def _name(obj: Obj) -> str:
    return get(obj, "metadata", "name", default="")


def _age(obj: Obj, now: datetime) -> str:
    return since(get(obj, "metadata", "creationTimestamp"), now)


def _template_cells(obj: Obj) -> list[str]:
    return list(layout_containers(get(obj, "spec", "template", "spec", "containers")))


# --- apps/v1, batch/v1 ---------------------------------------------------------------------

def deployment_cells(obj: Obj, now: datetime) -> list[Any]:
    status = obj.get("status") or {}
    try:
        selector = selector_string(get(obj, "spec", "selector"))
    except ValueError:
        selector = "<invalid>"
    # spec.replicas is defaulted to 1 by the apiserver; a stored object always has it.
    desired = get(obj, "spec", "replicas", default=1)
    return [
        _name(obj),
        f"{status.get('readyReplicas') or 0}/{desired}",
        status.get("updatedReplicas") or 0,
        status.get("availableReplicas") or 0,
        _age(obj, now),
        *_template_cells(obj),
        selector,
    ]


def replicaset_cells(obj: Obj, now: datetime) -> list[Any]:
    status = obj.get("status") or {}
    return [
        _name(obj),
        get(obj, "spec", "replicas", default=1),
        status.get("replicas") or 0,
        status.get("readyReplicas") or 0,
        _age(obj, now),
        *_template_cells(obj),
        format_label_selector(get(obj, "spec", "selector")),
    ]


def _job_condition(obj: Obj, kind: str) -> bool:
    for cond in get(obj, "status", "conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _job_status(obj: Obj) -> str:
    if _job_condition(obj, "Complete"):
        return "Complete"
    if _job_condition(obj, "Failed"):
        return "Failed"
    if get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    if _job_condition(obj, "Suspended"):
        return "Suspended"
    if _job_condition(obj, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def job_cells(obj: Obj, now: datetime) -> list[Any]:
    succeeded = get(obj, "status", "succeeded", default=0)
    completions = get(obj, "spec", "completions")
    if completions is not None:
        completions_cell = f"{succeeded}/{completions}"
    else:
        parallelism = get(obj, "spec", "parallelism", default=0)
        completions_cell = (f"{succeeded}/1 of {parallelism}" if parallelism > 1
                            else f"{succeeded}/1")
    start = parse_time(get(obj, "status", "startTime"))
    end = parse_time(get(obj, "status", "completionTime"))
    duration = "" if start is None else human_duration((end or now) - start)
    return [
        _name(obj),
        _job_status(obj),
        completions_cell,
        duration,
        _age(obj, now),
        *_template_cells(obj),
        format_label_selector(get(obj, "spec", "selector")),
    ]


# --- core/v1 -------------------------------------------------------------------------------

def _service_external_ip(obj: Obj) -> str:
    spec = obj.get("spec") or {}
    external = spec.get("externalIPs") or []
    kind = spec.get("type") or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else NONE
    if kind == "LoadBalancer":
        # Unique IPs (else hostnames) sorted; never clipped since the server prints wide.
        found = {i.get("ip") or i.get("hostname") for i in
                 get(obj, "status", "loadBalancer", "ingress") or []}
        lb = sorted(x for x in found if x)
        if external:
            return ",".join([*lb, *external])
        return ",".join(lb) if lb else "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName") or ""
    return UNKNOWN


def _service_ports(ports: list[Obj]) -> str:
    pieces = []
    for p in ports:
        protocol = p.get("protocol") or "TCP"
        node_port = p.get("nodePort") or 0
        pieces.append(f"{p.get('port')}:{node_port}/{protocol}" if node_port > 0
                      else f"{p.get('port')}/{protocol}")
    return ",".join(pieces) or NONE


def service_cells(obj: Obj, now: datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or []
    # v1 -> internal conversion fills clusterIPs from clusterIP when only the latter is set.
    internal_ip = (cluster_ips[0] if cluster_ips else spec.get("clusterIP")) or NONE
    return [
        _name(obj),
        spec.get("type") or "ClusterIP",
        internal_ip,
        _service_external_ip(obj),
        _service_ports(spec.get("ports") or []),
        _age(obj, now),
        format_labels(spec.get("selector")),
    ]


def _format_endpoints(obj: Obj) -> str:
    """`formatEndpoints(ep, nil)`, including its count of one address per port."""
    subsets = obj.get("subsets") or []
    if not subsets:
        return NONE
    shown: list[str] = []
    limit, count, more = 3, 0, False
    for ss in subsets:
        addresses = [a.get("ip") or "" for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        # Headless services may have no ports: list bare IPs then.
        for port in ports or [None]:
            count += len(addresses)
            for ip in addresses:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(ip if port is None else join_host_port(ip, port.get("port")))
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if more else text


def endpoints_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), _format_endpoints(obj), _age(obj, now)]


def _node_roles(obj: Obj) -> str:
    roles = set()
    for key, value in (get(obj, "metadata", "labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.removeprefix("node-role.kubernetes.io/")
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def _node_address(obj: Obj, kind: str) -> str:
    for address in get(obj, "status", "addresses") or []:
        if address.get("type") == kind:
            return address.get("address") or ""
    return NONE


def node_cells(obj: Obj, now: datetime) -> list[Any]:
    status: list[str] = []
    for cond in get(obj, "status", "conditions") or []:
        if cond.get("type") == "Ready":
            # Later duplicates win, as printNode keys conditions by type.
            status = ["Ready" if cond.get("status") == "True" else "NotReady"]
    status = status or ["Unknown"]
    if get(obj, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    info = get(obj, "status", "nodeInfo") or {}
    return [
        _name(obj),
        ",".join(status),
        _node_roles(obj),
        _age(obj, now),
        info.get("kubeletVersion") or "",
        _node_address(obj, "InternalIP"),
        _node_address(obj, "ExternalIP"),
        info.get("osImage") or UNKNOWN,
        info.get("kernelVersion") or UNKNOWN,
        info.get("containerRuntimeVersion") or UNKNOWN,
    ]


def _event_source(obj: Obj) -> str:
    component = get(obj, "source", "component") or obj.get("reportingComponent") or ""
    host = get(obj, "source", "host") or obj.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def event_cells(obj: Obj, now: datetime) -> list[Any]:
    first = (since(obj["firstTimestamp"], now) if parse_time(obj.get("firstTimestamp"))
             else since(obj.get("eventTime"), now))
    last = since(obj["lastTimestamp"], now) if parse_time(obj.get("lastTimestamp")) else first
    count = obj.get("count") or 0
    series = obj.get("series")
    if series is not None:
        last = since(series.get("lastObservedTime"), now)
        count = series.get("count") or 0
    elif count == 0:
        count = 1  # singleton events from events.k8s.io carry no count
    involved = obj.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [
        last,
        obj.get("type") or "",
        obj.get("reason") or "",
        target,
        involved.get("fieldPath") or "",
        _event_source(obj),
        (obj.get("message") or "").strip(),
        first,
        count,
        _name(obj),
    ]


def namespace_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), get(obj, "status", "phase", default=""), _age(obj, now)]


def configmap_cells(obj: Obj, now: datetime) -> list[Any]:
    size = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_name(obj), size, _age(obj, now)]


def secret_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), obj.get("type") or "", len(obj.get("data") or {}), _age(obj, now)]


def serviceaccount_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), len(obj.get("secrets") or []), _age(obj, now)]


# --- coordination.k8s.io/v1, discovery.k8s.io/v1 -------------------------------------------

def lease_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), get(obj, "spec", "holderIdentity", default=""), _age(obj, now)]


def endpointslice_cells(obj: Obj, now: datetime) -> list[Any]:
    ports = obj.get("ports") or []
    port_names = []
    for p in ports[:3]:
        port = p.get("port")
        name = p.get("name")
        port_names.append(str(port) if port is not None else "*" if name is None else name)
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        _name(obj),
        obj.get("addressType") or "",
        list_with_more(port_names, len(ports)),
        list_with_more(addresses[:3], len(addresses)),
        _age(obj, now),
    ]


# --- networking.k8s.io/v1 ------------------------------------------------------------------

def networkpolicy_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), format_label_selector(get(obj, "spec", "podSelector", default={})),
            _age(obj, now)]


# --- scheduling.k8s.io/v1 ------------------------------------------------------------------

def priorityclass_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), obj.get("value") or 0, bool(obj.get("globalDefault")), _age(obj, now),
            obj.get("preemptionPolicy") or "PreemptLowerPriority"]


def default_cells(obj: Obj, now: datetime) -> list[Any]:
    return [_name(obj), _age(obj, now)]


_SELECTOR = "Label selector for pods."

PRINTERS: dict[tuple[str, str], Printer] = {
    ("apps", "Deployment"): Printer((
        NAME,
        Column("Ready", description="Number of the pod with ready state"),
        Column("Up-to-date", description="Total number of non-terminating pods targeted by "
               "this deployment that have the desired template spec."),
        Column("Available", description="Total number of available non-terminating pods "
               "(ready for at least minReadySeconds) targeted by this deployment."),
        AGE, CONTAINERS, IMAGES, wide("Selector", _SELECTOR),
    ), deployment_cells),
    ("apps", "ReplicaSet"): Printer((
        NAME,
        Column("Desired", "integer", "Replicas is the number of desired pods."),
        Column("Current", "integer",
               "Replicas is the most recently observed number of non-terminating pods."),
        Column("Ready", "integer", "The number of non-terminating pods targeted by this "
               "ReplicaSet with a Ready Condition."),
        AGE, CONTAINERS, IMAGES,
        wide("Selector", "Selector is a label query over pods that should match the replica "
             "count."),
    ), replicaset_cells),
    ("batch", "Job"): Printer((
        NAME,
        Column("Status", description="Status of the job."),
        Column("Completions", description="The number of pods which reached phase Succeeded."),
        Column("Duration", description="Time required to complete the job."),
        AGE, CONTAINERS, IMAGES,
        wide("Selector", "A label query over pods that should match the pod count."),
    ), job_cells),
    ("", "Service"): Printer((
        NAME,
        Column("Type", description="type determines how the Service is exposed."),
        Column("Cluster-IP", description="clusterIP is the IP address of the service and is "
               "usually assigned randomly."),
        Column("External-IP", description="externalIPs is a list of IP addresses for which "
               "nodes in the cluster will also accept traffic for this service."),
        Column("Port(s)", description="The list of ports that are exposed by this service."),
        AGE,
        wide("Selector", "Route service traffic to pods with label keys and values matching "
             "this selector."),
    ), service_cells),
    ("", "Endpoints"): Printer((
        NAME,
        Column("Endpoints", description="The set of all endpoints is the union of all subsets."),
        AGE,
    ), endpoints_cells),
    ("", "Node"): Printer((
        NAME,
        Column("Status", description="The status of the node"),
        Column("Roles", description="The roles of the node"),
        AGE,
        Column("Version", description="Kubelet Version reported by the node."),
        wide("Internal-IP", "List of addresses reachable to the node."),
        wide("External-IP", "List of addresses reachable to the node."),
        wide("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian "
             "GNU/Linux 7 (wheezy))."),
        wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. "
             "3.16.0-0.bpo.4-amd64)."),
        wide("Container-Runtime", "ContainerRuntime Version reported by the node through "
             "runtime remote API (e.g. containerd://1.4.2)."),
    ), node_cells),
    ("", "Event"): Printer((
        Column("Last Seen", description="The time at which the most recent occurrence of this "
               "event was recorded."),
        Column("Type", description="Type of this event (Normal, Warning), new types could be "
               "added in the future"),
        Column("Reason", description="This should be a short, machine understandable string "
               "that gives the reason for the transition into the object's current status."),
        Column("Object", description="The object that this event is about."),
        wide("Subobject", "If referring to a piece of an object instead of an entire object, "
             "this string should contain a valid JSON/Go field access statement, such as "
             "desiredState.manifest.containers[2]."),
        wide("Source", "The component reporting this event."),
        Column("Message", description="A human-readable description of the status of this "
               "operation."),
        wide("First Seen", "The time at which the event was first recorded."),
        wide("Count", "The number of times this event has occurred."),
        Column(NAME.name, NAME.type, NAME.description, priority=1, format="name"),
    ), event_cells),
    ("", "Namespace"): Printer((
        NAME, Column("Status", description="The status of the namespace"), AGE,
    ), namespace_cells),
    ("", "ConfigMap"): Printer((
        NAME, Column("Data", description="Data contains the configuration data."), AGE,
    ), configmap_cells),
    ("", "Secret"): Printer((
        NAME,
        Column("Type", description="Used to facilitate programmatic handling of secret data."),
        Column("Data", description="Data contains the secret data."),
        AGE,
    ), secret_cells),
    ("", "ServiceAccount"): Printer((
        NAME,
        Column("Secrets", description="Secrets is a list of the secrets in the same namespace "
               "that pods running using this ServiceAccount are allowed to use."),
        AGE,
    ), serviceaccount_cells),
    ("coordination.k8s.io", "Lease"): Printer((
        NAME,
        Column("Holder", description="holderIdentity contains the identity of the holder of "
               "a current lease."),
        AGE,
    ), lease_cells),
    ("discovery.k8s.io", "EndpointSlice"): Printer((
        NAME,
        Column("AddressType", description="addressType specifies the type of address carried "
               "by this EndpointSlice."),
        Column("Ports", description="ports specifies the list of network ports exposed by "
               "each endpoint in this slice."),
        Column("Endpoints", description="endpoints is a list of unique endpoints in this "
               "slice."),
        AGE,
    ), endpointslice_cells),
    ("networking.k8s.io", "NetworkPolicy"): Printer((
        NAME,
        Column("Pod-Selector", description="podSelector selects the pods to which this "
               "NetworkPolicy object applies."),
        AGE,
    ), networkpolicy_cells),
    ("scheduling.k8s.io", "PriorityClass"): Printer((
        NAME,
        Column("Value", "integer", "value represents the integer value of this priority "
               "class."),
        Column("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass "
               "should be considered as the default priority for pods that do not have any "
               "priority class."),
        AGE,
        Column("PreemptionPolicy", description="preemptionPolicy is the Policy for preempting "
               "pods with lower priority."),
    ), priorityclass_cells),
}

# What a CRD without additionalPrinterColumns shows: the name and a humanized "date" column.
DEFAULT = Printer((NAME, Column("Age", "date", AGE.description)), default_cells)
