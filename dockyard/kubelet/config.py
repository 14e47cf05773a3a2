"""The node agent's settings (Kubernetes' KubeletConfiguration, the parts dockyard has)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class KubeletConfig:
    node_name: str
    data_dir: Path  # the cluster's data directory; the agent keeps its state in data_dir/agent
    prefix: str  # per-cluster prefix of everything created on the host (runtime/naming.py)
    max_pods: int = 110
    pod_cidr: str = "10.42.0.0/24"  # this node's pod subnet (the networking issue assigns it)
    cluster_dns: list[str] = field(default_factory=list)  # nameservers for dnsPolicy ClusterFirst
    cluster_domain: str = "cluster.local"
    node_labels: dict[str, str] = field(default_factory=dict)
    # Crash back-off: doubles from initial to max (Kubernetes: 10 s to 300 s).
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    # Heartbeats (Kubernetes: Lease renewed every 10 s of a 40 s lease; status every 10 s).
    node_status_update_frequency: float = 10.0
    lease_duration: int = 40
    pod_pids_limit: int | None = 4096  # --pod-max-pids; None: unlimited
    serving_port: int = 10250  # the agent's HTTPS port for logs and exec (0: any free port)
    address: str = ""  # the node's InternalIP ("" = detect)
    log_max_size: int = 10 * 1024 * 1024  # containerLogMaxSize
    log_max_files: int = 5  # containerLogMaxFiles
    eviction_hard_memory: int = 100 * 1024 * 1024  # memory.available<100Mi -> MemoryPressure
    eviction_hard_disk_percent: float = 10.0  # nodefs.available<10% -> DiskPressure

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "agent"

    @property
    def pods_dir(self) -> Path:
        """data_dir/agent/pods/<uid>/ holds volumes, etc-hosts, resolv.conf and logs."""
        return self.state_dir / "pods"
