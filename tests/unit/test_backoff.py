"""Unit tests for kubelet/backoff.py: client-go's per-key exponential back-off."""

from __future__ import annotations

import pytest

from dockyard.kubelet.backoff import Backoff, go_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_failure_restarts_at_once_then_delays_double_up_to_the_max() -> None:
    clock = Clock()
    b = Backoff(10, 300, clock=clock)
    delays = []
    for _ in range(8):
        exited = clock.now
        if b.in_backoff_since("c", exited):
            delays.append(b.get("c"))
            clock.now += b.remaining("c", exited)
            assert not b.in_backoff_since("c", exited)
        else:
            delays.append(0.0)
        b.next("c", exited)
        clock.now += 1  # the container runs one second, then crashes again
    assert delays == [0.0, 10, 20, 40, 80, 160, 300, 300]


def test_keys_are_independent() -> None:
    clock = Clock()
    b = Backoff(1, 8, clock=clock)
    b.next("a", clock.now)
    b.next("a", clock.now)
    b.next("b", clock.now)
    assert (b.get("a"), b.get("b"), b.get("c")) == (2, 1, 0)


def test_reset_after_running_long_enough() -> None:
    """A container that ran past 2 x max before crashing starts over at the initial delay."""
    clock = Clock()
    b = Backoff(10, 300, clock=clock)
    for _ in range(4):
        b.next("c", clock.now)
    assert b.get("c") == 80
    clock.now += 601
    assert not b.in_backoff_since("c", clock.now)
    b.next("c", clock.now)
    assert b.get("c") == 10


def test_in_backoff_since_update_for_image_pulls() -> None:
    clock = Clock()
    b = Backoff(10, 300, clock=clock)
    assert not b.in_backoff_since_update("img", clock.now)
    b.next("img", clock.now)
    clock.now += 5
    assert b.in_backoff_since_update("img", clock.now)
    assert b.until_update_expires("img") == pytest.approx(5)
    clock.now += 5
    assert not b.in_backoff_since_update("img", clock.now)


def test_forget_and_gc() -> None:
    clock = Clock()
    b = Backoff(1, 2, clock=clock)
    b.next("uid1/a", clock.now)
    b.next("uid1/b", clock.now)
    b.next("uid2/a", clock.now)
    b.forget_prefix("uid1/")
    assert len(b) == 1
    clock.now += 10
    b.gc()
    assert len(b) == 0


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10s"), (20, "20s"), (80, "1m20s"), (160, "2m40s"), (300, "5m0s"), (0.05, "50ms"),
    (0.4, "400ms"), (1.5, "1.5s"), (3600, "1h0m0s"), (0, "0s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
