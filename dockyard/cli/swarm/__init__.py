"""The Swarm-simple CLI: `dockyard service` and `dockyard node` over the Kubernetes API.

A Swarm service is a Deployment (its pods are the tasks) plus a Service (its virtual IP and
published ports); the Swarm-level settings that Kubernetes has no field for (update config,
failure action, monitor, the previous spec for rollback) travel as annotations. Layers:
`spec` (what the user asked for) → `options` (flag parsing) → `mapping` (spec ↔ objects,
pure) → `tasks`/`tables`/`inspect`/`progress` (what the user sees, pure) → `cluster` (API
calls) → `rollout`/`logs` (long operations) → `service_cmd`/`node_cmd` (click).
"""

from __future__ import annotations
