"""A stand-in for the node agent in tests: it moves pods through their lifecycle.

There is no kubelet in controller tests, so pods would stay Pending forever. `FakeNode`
watches the pods of one namespace (through the real API, like a kubelet) and

- applies a *policy* to every new pod that matches a label selector: `"ready"` (Running and
  Ready), `"running"` (Running, not Ready), `"succeed"`, `"fail"`, or `None` (leave Pending);
  rules are tried in the order they were added, `delay` seconds after the pod appears;
- finishes graceful deletions: a pod bound to a node that got a deletionTimestamp is deleted
  again with gracePeriodSeconds=0, as a kubelet does once the containers stopped;
- offers the same transitions on demand: `await node.ready(name)`, `succeed`, `fail`,
  `running`, `not_ready`.

Usage::

    async with FakeNode(client, "default") as node:
        node.policy("ready", {"app": "web"})       # every new app=web pod becomes Ready
        ...
        await node.fail("job-abcde", exit_code=2)  # one pod, by name

Pods are left unscheduled unless `node_name` is given (then they are bound first, which makes
deletions graceful). Status writes are `update_status` calls with Kubernetes' field shapes:
phase, the PodScheduled/Initialized/ContainersReady/Ready conditions, containerStatuses with
running or terminated states, startTime, hostIP and podIP.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dockyard.api.meta import selector_matches
from dockyard.api.resources import by_kind
from dockyard.client.informer import Handlers, Informer
from dockyard.client.rest import ApiError, Client

PODS = by_kind("", "Pod")
assert PODS is not None

Obj = dict[str, Any]
ACTIONS = ("ready", "running", "succeed", "fail", None)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Rule:
    action: str | None
    selector: Obj | None
    delay: float


def pod_status(pod: Obj, action: str, *, exit_code: int = 1, restarts: int = 0) -> Obj:
    """The status a kubelet would report for `action` (see the module docstring)."""
    now = _now()
    started = (pod.get("status") or {}).get("startTime") or now
    ready = action == "ready"
    finished = action in ("succeed", "fail")
    phase = {"ready": "Running", "running": "Running", "succeed": "Succeeded",
             "fail": "Failed"}[action]
    if finished:
        code = 0 if action == "succeed" else exit_code
        state: Obj = {"terminated": {"exitCode": code,
                                     "reason": "Completed" if code == 0 else "Error",
                                     "startedAt": started, "finishedAt": now}}
    else:
        state = {"running": {"startedAt": started}}
    containers = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                   "containerID": f"fake://{c['name']}", "ready": ready, "started": not finished,
                   "restartCount": restarts, "state": state}
                  for c in (pod.get("spec") or {}).get("containers") or []]
    old = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}

    def cond(type_: str, value: bool, reason: str = "") -> Obj:
        text = "True" if value else "False"
        previous = old.get(type_)
        since = previous["lastTransitionTime"] if previous and previous.get("status") == text \
            and previous.get("lastTransitionTime") else now
        out: Obj = {"type": type_, "status": text, "lastProbeTime": None,
                    "lastTransitionTime": since}
        if reason:
            out["reason"] = reason
        return out

    not_ready_reason = "PodCompleted" if finished else "ContainersNotReady"
    conditions = [cond("Initialized", True, "PodCompleted" if finished else ""),
                  cond("Ready", ready, "" if ready else not_ready_reason),
                  cond("ContainersReady", ready, "" if ready else not_ready_reason),
                  cond("PodScheduled", True)]
    return {**(pod.get("status") or {}), "phase": phase, "conditions": conditions,
            "containerStatuses": containers, "startTime": started,
            "hostIP": "127.0.0.1", "podIP": "10.244.0.2", "podIPs": [{"ip": "10.244.0.2"}]}


class FakeNode:
    def __init__(self, client: Client, namespace: str = "default", *,
                 node_name: str | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.node_name = node_name
        self.rules: list[_Rule] = []
        self.informer = Informer(client, PODS, namespace=namespace, watch_timeout=60)
        self.informer.add_handlers(Handlers(self._on_add, lambda _o, cur: self._on_update(cur)))
        self._tasks: set[asyncio.Task[None]] = set()
        self._run: asyncio.Task[None] | None = None
        self._handled: set[str] = set()
        self._finishing: set[str] = set()

    async def __aenter__(self) -> FakeNode:
        self._run = asyncio.create_task(self.informer.run(), name="fakenode-informer")
        await self.informer.wait_synced()
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._run, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def policy(self, action: str | None, selector: dict[str, str] | Obj | None = None, *,
               delay: float = 0.0) -> None:
        """Apply `action` to new pods whose labels match (a label map or a LabelSelector)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
        if selector is not None and "matchLabels" not in selector and \
                "matchExpressions" not in selector:
            selector = {"matchLabels": dict(selector)}
        self.rules.append(_Rule(action, selector, delay))

    def pods(self, labels: dict[str, str] | None = None) -> list[Obj]:
        """Pods in the node's cache, optionally those carrying all of `labels`."""
        return [p for p in self.informer.list()
                if all(((p["metadata"].get("labels") or {}).get(k) == v)
                       for k, v in (labels or {}).items())]

    # -- transitions on demand ---------------------------------------------------------------

    async def ready(self, name: str) -> Obj:
        return await self.set(name, "ready")

    async def running(self, name: str) -> Obj:
        return await self.set(name, "running")

    async def not_ready(self, name: str) -> Obj:
        return await self.set(name, "running")

    async def succeed(self, name: str) -> Obj:
        return await self.set(name, "succeed")

    async def fail(self, name: str, *, exit_code: int = 1) -> Obj:
        return await self.set(name, "fail", exit_code=exit_code)

    async def set(self, name: str, action: str, *, exit_code: int = 1) -> Obj:
        """Write the status for `action`, re-reading the pod on a write conflict."""
        for _ in range(20):
            pod = await self.client.get(PODS, self.namespace, name)
            if self.node_name and not pod["spec"].get("nodeName"):
                await self.client.bind(self.namespace, name, self.node_name)
                pod = await self.client.get(PODS, self.namespace, name)
            pod["status"] = pod_status(pod, action, exit_code=exit_code)
            try:
                return await self.client.update_status(PODS, pod)
            except ApiError as exc:
                if exc.code != 409:
                    raise
        raise RuntimeError(f"pod {name}: status kept conflicting")

    # -- reacting to the watch ----------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_add(self, pod: Obj) -> None:
        self._on_update(pod)
        uid = pod["metadata"]["uid"]
        if uid in self._handled or (pod.get("status") or {}).get("phase") not in (None,
                                                                                  "Pending"):
            return
        labels = pod["metadata"].get("labels") or {}
        for rule in self.rules:
            if rule.selector is None or selector_matches(rule.selector, labels):
                self._handled.add(uid)
                if rule.action is not None:
                    self._spawn(self._apply(pod["metadata"]["name"], rule.action, rule.delay))
                return

    def _on_update(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and meta["uid"] not in self._finishing:
            self._finishing.add(meta["uid"])
            self._spawn(self._finish_deletion(meta["name"], meta["uid"]))

    async def _apply(self, name: str, action: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        with contextlib.suppress(ApiError):  # the pod may be gone already
            await self.set(name, action)

    async def _finish_deletion(self, name: str, uid: str) -> None:
        with contextlib.suppress(ApiError):
            await self.client.delete(PODS, self.namespace, name, grace_period_seconds=0,
                                     preconditions={"uid": uid})
