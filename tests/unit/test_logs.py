"""The CRI log reader behind `kubectl logs`: what a user sees for each option."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from dockyard.kubelet import logs
from dockyard.kubelet.logs import LogOptions, format_timestamp, parse_timestamp, read_logs

BASE = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z


def stamp(seconds: float) -> str:
    return format_timestamp(BASE + int(seconds * 1e9)).decode()


def record(seconds: float, content: str, stream: str = "stdout", tag: str = "F") -> str:
    return f"{stamp(seconds)} {stream} {tag} {content}\n"


def write(path: Path, *records: str, mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(records))
        f.flush()


async def read(path: Path, **options: object) -> str:
    out = [chunk async for chunk in read_logs(path, LogOptions(**options))]  # type: ignore[arg-type]
    return b"".join(out).decode()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "0.log"
    write(path,
          record(1, "one"),
          record(2, "two", "stderr"),
          record(3, "thr", tag="P"), record(3.5, "ee"),
          record(4, "four"))
    return path


def test_timestamps_round_trip_with_nanoseconds_and_offsets() -> None:
    assert parse_timestamp(b"2016-10-06T00:17:09.669794202Z") == 1475713029669794202
    assert parse_timestamp(b"2016-10-06T00:17:09.6697942Z") == 1475713029669794200
    assert parse_timestamp(b"2016-10-06T02:17:09+02:00") == 1475713029000000000
    assert parse_timestamp(b"yesterday") is None
    assert format_timestamp(1475713029669794200) == b"2016-10-06T00:17:09.669794200Z"


async def test_everything_in_order_with_partial_lines_joined(log: Path) -> None:
    assert await read(log) == "one\ntwo\nthree\nfour\n"


async def test_tail_counts_lines_as_the_user_sees_them(log: Path) -> None:
    assert await read(log, tail_lines=1) == "four\n"
    assert await read(log, tail_lines=2) == "three\nfour\n"  # P+F records are one line
    assert await read(log, tail_lines=3) == "two\nthree\nfour\n"
    assert await read(log, tail_lines=100) == "one\ntwo\nthree\nfour\n"
    assert await read(log, tail_lines=0) == ""


async def test_tail_counts_a_line_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(path, record(1, "a"), record(2, "b"), record(3, "c-part", tag="P"))
    assert await read(path, tail_lines=1) == "c-part"
    assert await read(path, tail_lines=2) == "b\nc-part"


async def test_since_skips_older_records(log: Path) -> None:
    assert await read(log, since_ns=BASE + int(2.5e9)) == "three\nfour\n"
    assert await read(log, since_ns=BASE + int(3.2e9)) == "ee\nfour\n"  # half a line
    assert await read(log, since_ns=BASE + int(2.5e9), tail_lines=1) == "four\n"


async def test_timestamps_prefix_every_record(log: Path) -> None:
    out = await read(log, tail_lines=1, timestamps=True)
    assert out == f"{stamp(4)} four\n"
    first = (await read(log, timestamps=True)).splitlines()[0]
    assert first == "2023-11-14T22:13:21.000000000Z one"


async def test_limit_bytes_cuts_the_output(log: Path) -> None:
    assert await read(log, limit_bytes=6) == "one\ntw"


async def test_rotated_files_are_read_oldest_first_and_tail_spans_them(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(Path(f"{path}.2"), record(1, "a"), record(2, "b"))
    write(Path(f"{path}.1"), record(3, "c"))
    write(path, record(4, "d"))
    assert logs.log_files(path) == [Path(f"{path}.2"), Path(f"{path}.1"), path]
    assert await read(path) == "a\nb\nc\nd\n"
    assert await read(path, tail_lines=3) == "b\nc\nd\n"


async def test_garbage_lines_are_skipped_and_an_unfinished_record_waits(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(path, "not a log line\n", record(1, "ok"), stamp(2) + " stdout F half")
    assert await read(path) == "ok\n"
    assert await read(path, tail_lines=5) == "ok\n"


async def test_tail_across_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    monkeypatch.setattr(logs, "CHUNK", 7)  # records straddle every read
    path = tmp_path / "0.log"
    write(path, *(record(i, f"line {i}" + "x" * (i % 5)) for i in range(50)))
    expected = [f"line {i}" + "x" * (i % 5) for i in range(50)]
    for n in (0, 1, 2, 17, 49, 50, 80):
        got = (await read(path, tail_lines=n)).splitlines()
        assert got == (expected[-n:] if n else [])


async def test_follow_sees_new_lines_quickly_and_ends_after_exit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(path, record(1, "before"))
    alive = True

    async def running() -> bool:
        return alive

    received: list[tuple[float, bytes]] = []

    async def follow() -> None:
        async for chunk in read_logs(path, LogOptions(follow=True), running=running,
                                     check_every=0.2):
            received.append((time.monotonic(), chunk))

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    assert b"".join(c for _, c in received) == b"before\n"
    written = time.monotonic()
    write(path, record(2, "after"))
    for _ in range(100):
        if len(received) == 2:
            break
        await asyncio.sleep(0.01)
    assert received[-1][1] == b"after\n"
    # woken by inotify (one watch on the log's directory), not by a poll
    assert [bool(w.refs) and w.fd >= 0 for w in logs._watchers.values()] == [True]
    print(f"new line seen after {(received[-1][0] - written) * 1000:.1f} ms")
    write(path, record(3, "last words"))
    alive = False
    await asyncio.wait_for(task, 2)  # ends by itself once the container exited
    assert b"".join(c for _, c in received) == b"before\nafter\nlast words\n"
    assert not logs._watchers  # the inotify instance is gone with its last reader


async def test_follow_continues_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    write(path, record(1, "a"))
    chunks: list[bytes] = []

    async def follow() -> None:
        async for chunk in read_logs(path, LogOptions(follow=True, tail_lines=1)):
            chunks.append(chunk)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    write(path, record(2, "b"))
    os.rename(path, f"{path}.1")  # the shim rotates: rename, then a new file
    write(path, record(3, "c"), mode="w")
    for _ in range(200):
        if b"".join(chunks) == b"a\nb\nc\n":
            break
        await asyncio.sleep(0.01)
    task.cancel()  # the client went away: following stops, the watch is dropped
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b"".join(chunks) == b"a\nb\nc\n"
    assert not logs._watchers


async def test_follow_of_a_container_that_already_exited_returns_at_once(log: Path) -> None:
    async def running() -> bool:
        return False

    start = time.monotonic()
    out = [c async for c in read_logs(log, LogOptions(follow=True, tail_lines=1),
                                      running=running)]
    assert b"".join(out) == b"four\n"
    assert time.monotonic() - start < 0.5


async def test_follow_waits_for_a_file_not_yet_created(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    chunks: list[bytes] = []

    async def follow() -> None:
        async for chunk in read_logs(path, LogOptions(follow=True)):
            chunks.append(chunk)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    write(path, record(1, "hello"))
    for _ in range(100):
        if chunks:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chunks == [b"hello\n"]
