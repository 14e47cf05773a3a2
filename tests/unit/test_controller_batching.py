"""Coalescing in the controller machinery: batched work-queue adds, compiled label selectors,
and the event recorder's correlation (aggregation, spam filter, write rate)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dockyard.api.meta import selector_matches
from dockyard.client.events import COMBINED_PREFIX, EventRecorder, TokenBucket
from dockyard.client.workqueue import WorkQueue
from dockyard.controllers.controller_utils import label_matcher


async def test_add_batched_runs_a_lone_change_at_once_and_a_burst_once_per_period() -> None:
    queue = WorkQueue()
    queue.add_batched("rs", 0.2)  # never taken: at once
    assert len(queue) == 1
    assert await queue.get() == "rs"
    queue.done("rs")
    started = time.monotonic()
    for _ in range(50):  # a burst right after a run: one run, a period after the last one
        queue.add_batched("rs", 0.2)
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 2) == "rs"
    assert time.monotonic() - started >= 0.15
    queue.done("rs")
    assert len(queue) == 0
    await asyncio.sleep(0.25)
    queue.add_batched("rs", 0.2)  # quiet for a period: at once again
    assert len(queue) == 1


async def test_add_batched_leaves_an_already_queued_key_alone() -> None:
    queue = WorkQueue()
    queue.add("rs")
    queue.add_batched("rs", 0.05)
    assert await queue.get() == "rs"
    queue.done("rs")
    await asyncio.sleep(0.1)
    assert len(queue) == 0  # the queued run covered it: no second run was scheduled


@pytest.mark.parametrize("selector", [
    None, {}, {"matchLabels": {"app": "web"}}, {"matchLabels": {"app": "web", "tier": "fe"}},
    {"matchLabels": {}}, {"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
])
@pytest.mark.parametrize("labels", [
    None, {}, {"app": "web"}, {"app": "web", "tier": "fe"}, {"app": "db", "tier": "be"},
    {"tier": "fe"},
])
def test_label_matcher_agrees_with_selector_matches(selector: Any, labels: Any) -> None:
    assert label_matcher(selector)(labels) == selector_matches(selector, labels)


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}}


def _queued(recorder: EventRecorder) -> list[str]:
    """The messages waiting to be written (the recorder was not started)."""
    items = []
    while not recorder._pending.empty():
        _, _, _, message, _ = recorder._pending.get_nowait()
        items.append(message)
    return items


async def test_similar_events_are_combined_and_an_object_gets_25() -> None:
    recorder = EventRecorder(None, "test")  # type: ignore[arg-type]  # never writes here
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "web", "namespace": "default", "uid": "u"}}
    for i in range(1000):
        recorder.event(rs, "Normal", "SuccessfulCreate", f"Created pod: web-{i}")
    messages = _queued(recorder)
    assert len(messages) == 25  # the spam filter's burst
    assert messages[:9] == [f"Created pod: web-{i}" for i in range(9)]
    assert all(m.startswith(COMBINED_PREFIX) for m in messages[9:])
    # Another object, and a Warning about the same one, have buckets of their own.
    for i in range(3):
        recorder.event(_pod(f"p{i}"), "Normal", "Scheduled", f"Successfully assigned p{i}")
    recorder.event(rs, "Warning", "FailedCreate", "quota exceeded")
    assert len(_queued(recorder)) == 4


async def test_repeats_of_one_message_are_not_combined() -> None:
    recorder = EventRecorder(None, "test")  # type: ignore[arg-type]
    for _ in range(20):
        recorder.event(_pod("p"), "Warning", "FailedScheduling", "0/3 nodes are available")
    assert set(_queued(recorder)) == {"0/3 nodes are available"}


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=100.0, burst=2)
    assert bucket.wait() == 0.0 and bucket.wait() == 0.0
    wait = bucket.wait()
    assert 0.0 < wait <= 0.01
    time.sleep(wait + 0.002)
    assert bucket.wait() == 0.0
