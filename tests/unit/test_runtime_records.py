"""The runtime's records: what a restarted agent reads back, and how exits become statuses."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dockyard.runtime.cri import ContainerState, RuntimeFailure, SandboxState
from dockyard.runtime.records import (
    ContainerRecord,
    ExitRecord,
    ExitWatcher,
    RecordStore,
    SandboxRecord,
    container_status,
    sandbox_status,
)
from dockyard.runtime.rootfs import overlay_options
from dockyard.runtime.service import _runc_message


def _container(**kw: object) -> ContainerRecord:
    base: dict = dict(id="dyabc-1", sandbox_id="dyabc-u-pause", pod_uid="u", name="app",
                      attempt=2, image_ref="busybox", image_id="sha256:1",
                      log_path="/logs/app/2.log", cgroups_path="/dyabc/u/dyabc-1",
                      created_at=100.0, labels={"io.kubernetes.container.name": "app"})
    base.update(kw)
    return ContainerRecord(**base)


def test_exit_record_from_the_shim_and_its_reason() -> None:
    shim_line = ('{"pid":42,"exit_code":137,"signal":9,"oom_killed":true,'
                 '"finished_ns":1700000000500000000}\n')
    oom = ExitRecord.parse(shim_line)
    assert (oom.pid, oom.exit_code, oom.signal, oom.reason) == (42, 137, 9, "OOMKilled")
    assert oom.finished_at == pytest.approx(1700000000.5)
    assert ExitRecord(pid=1, exit_code=0).reason == "Completed"
    assert ExitRecord(pid=1, exit_code=3).reason == "Error"
    assert ExitRecord(pid=1, exit_code=137, signal=9).reason == "Error"
    again = ExitRecord.parse(oom.dump())
    assert again == oom


def test_container_status_follows_created_started_exited() -> None:
    rec = _container()
    created = container_status(rec, None)
    assert created.state == ContainerState.CREATED and created.started_at == 0.0
    rec.started_at, rec.pid = 101.0, 77
    running = container_status(rec, None)
    assert (running.state, running.pid, running.attempt) == (ContainerState.RUNNING, 77, 2)
    assert running.log_path == Path("/logs/app/2.log")
    assert running.labels == {"io.kubernetes.container.name": "app"}
    exited = container_status(rec, ExitRecord(pid=77, exit_code=3, finished_at=105.0))
    assert (exited.state, exited.exit_code, exited.reason, exited.finished_at) == (
        ContainerState.EXITED, 3, "Error", 105.0)
    assert exited.started_at == 101.0


def test_sandbox_is_ready_until_its_pause_process_exits_or_it_is_stopped() -> None:
    rec = SandboxRecord(id="s", pod_uid="u", pod_name="p", namespace="ns", hostname="p",
                        netns_path="/run/netns/x", cgroups_path="/dy/u/s", created_at=1.0,
                        pid=10)
    assert sandbox_status(rec, None).state == SandboxState.READY
    assert sandbox_status(rec, ExitRecord(pid=10, exit_code=0)).state == SandboxState.NOTREADY
    rec.stopped = True
    assert sandbox_status(rec, None).state == SandboxState.NOTREADY
    assert sandbox_status(rec, None).netns_path == "/run/netns/x"


def test_record_store_round_trip_survives_a_new_process(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.create_dirs()
    rec = _container(started_at=5.0, pid=9, shim_pid=8, shim_start=1234, tty=True)
    store.save_container(rec)
    sb = SandboxRecord(id="s", pod_uid="u", pod_name="p", namespace="ns", hostname="h",
                       netns_path=None, cgroups_path="/dy/u/s", created_at=1.0, pid=3)
    store.save_sandbox(sb)

    reopened = RecordStore(tmp_path)  # what a restarted agent sees
    assert reopened.load_container(rec.id) == rec
    assert reopened.list_containers() == [rec]
    assert reopened.load_sandbox("s") == sb
    assert reopened.load_container("missing") is None

    # A record written by a newer version (an extra field) still loads.
    path = store.container_dir(rec.id) / "record.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "future_field": 1}))
    assert reopened.load_container(rec.id) == rec

    store.write_exit(store.exit_path(rec.id), ExitRecord(pid=9, exit_code=0))
    (store.exits / f"{rec.id}.json.tmp").write_text("half")  # a shim mid-write
    assert reopened.exited_container_ids() == {rec.id}
    store.delete_container(rec.id)
    assert reopened.load_container(rec.id) is None
    assert reopened.exited_container_ids() == set()
    store.delete_sandbox("s")
    assert reopened.list_sandboxes() == []


def test_a_damaged_exit_record_reads_as_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    rec = RecordStore.read_exit(path)
    assert rec is not None and rec.exit_code == 255 and "unreadable" in rec.message
    assert RecordStore.read_exit(tmp_path / "missing.json") is None


async def test_exit_watcher_wakes_on_a_renamed_exit_record(tmp_path: Path) -> None:
    watcher = ExitWatcher(tmp_path)
    watcher.start()
    try:
        target = tmp_path / "c1.json"

        async def shim_writes_later() -> None:
            await asyncio.sleep(0.05)
            (tmp_path / "c1.json.tmp").write_text("{}")
            os.rename(tmp_path / "c1.json.tmp", target)

        loop = asyncio.get_running_loop()
        started = loop.time()
        writer = asyncio.create_task(shim_writes_later())
        assert await watcher.wait_for(target, 5.0)
        assert loop.time() - started < 4.0  # woken by the rename, not by the timeout
        await writer
        assert not await watcher.wait_for(tmp_path / "never.json", 0.05)
        since = watcher.generation
        assert not await watcher.changed(since, 0.05)
    finally:
        watcher.close()


def test_overlay_puts_the_top_layer_first_and_refuses_separators() -> None:
    opts = overlay_options([Path("/l/base"), Path("/l/top")], Path("/c/upper"), Path("/c/work"))
    assert opts == "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
    with pytest.raises(RuntimeFailure, match="contains"):
        overlay_options([Path("/l/a:b")], Path("/u"), Path("/w"))
    with pytest.raises(RuntimeFailure, match="no layers"):
        overlay_options([], Path("/u"), Path("/w"))


def test_runc_errors_are_reduced_to_their_message() -> None:
    text = ('{"level":"warning","msg":"something minor","time":"t"}\n'
            '{"level":"error","msg":"runc create failed: unable to start container process: '
            'exec: \\"nope\\": executable file not found in $PATH","time":"t"}\n')
    assert _runc_message(text) == ('runc create failed: unable to start container process: '
                                   'exec: "nope": executable file not found in $PATH')
    assert _runc_message("plain words\n") == "plain words"
    assert "without a message" in _runc_message("")
