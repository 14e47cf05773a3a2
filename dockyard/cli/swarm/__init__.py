"""The Swarm-simple CLI: `dockyard service` and `dockyard node` over the Kubernetes API.

A Swarm service is a Deployment (its pods are the tasks) plus a Service (its virtual IP and
published ports); the Swarm-level settings Kubernetes has no field for (update and rollback
config, the previous spec, the update status) travel as annotations (see `mapping`).

Layers, lower never importing higher: `spec` (what the user asked for) → `options`, `edits`
(flags → spec) → `mapping` (spec ↔ objects) → `tasks`, `tables`, `inspect`, `progress` (what
the user sees) — all pure — then `cluster` (API calls), `apply`, `rollout`, `logs` (writes and
long operations), and `service_cmd`/`node_cmd` (click), which import the API layers only when
a command runs so that `dockyard` starts quickly.

What the attached CLI does that Swarm's manager would: the failure action of an update
(pause/rollback), the update status, global services' task counts (recomputed at `service
create/update` and `node update`), and recording task slots on pods.
"""

from __future__ import annotations
