"""The runc runtime with real runc: pod sandboxes, containers, exits, exec, restarts, cleanup.

Each test gets its own state directory (so its own prefix, runc root and cgroups) and a
busybox image layer made from the host's busybox-static; the fixture ends with cleanup_all()
and checks that nothing is left on the host.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.runtime import naming
from dockyard.runtime.cgroups import Cgroups
from dockyard.runtime.cri import (
    LABEL_CONTAINER_NAME,
    ContainerConfig,
    ContainerState,
    ImageSpec,
    NotFound,
    Resources,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
)
from dockyard.runtime.native import live_shims, proc_start
from dockyard.runtime.rootfs import mounts_under
from dockyard.runtime.service import RuncRuntime

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="real containers need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (apt-get install runc)"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static"),
]

APPLETS = ("sh", "sleep", "echo", "cat", "hostname", "readlink", "tail", "touch", "true",
           "head", "tr", "ps", "stty", "tty", "seq")
NO_LIMITS = Resources()
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) ([FP]) (.*)$")


@pytest.fixture(scope="module")
def busybox_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layer = tmp_path_factory.mktemp("busybox-layer")
    (layer / "bin").mkdir()
    (layer / "tmp").mkdir(mode=0o1777)
    shutil.copy2("/bin/busybox", layer / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", layer / "bin" / applet)
    return layer


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[RuncRuntime]:
    data = tmp_path / "data"
    runtime = RuncRuntime(data / "agent" / "runtime", naming.cluster_prefix(data),
                          log_max_size=64 * 1024, log_max_files=3)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.cleanup_all()
        assert_nothing_left(runtime)


def assert_nothing_left(runtime: RuncRuntime) -> None:
    ours = [c for c in runc_list(runtime) if c]
    assert ours == [], f"runc containers left: {ours}"
    assert mounts_under(runtime.state_dir) == []
    cgroups = [p / runtime.prefix for p, _, _ in Cgroups().mounts if (p / runtime.prefix).exists()]
    assert cgroups == [], f"cgroups left: {cgroups}"
    assert live_shims(runtime.runc.root) == {}
    assert not runtime.state_dir.exists() or list(runtime.state_dir.iterdir()) == []


def runc_list(runtime: RuncRuntime) -> list[str]:
    if not runtime.runc.root.exists():
        return []
    out = subprocess.run(["runc", "--root", str(runtime.runc.root), "list", "-q"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def image(layer: Path) -> ImageSpec:
    return ImageSpec(ref="busybox", image_id="sha256:" + "0" * 64, layer_dirs=(layer,))


def sandbox_config(uid: str, hostname: str = "pod-host") -> SandboxConfig:
    return SandboxConfig(pod_uid=uid, pod_name=f"pod-{uid}", namespace="default",
                         hostname=hostname, netns_path=None, labels={"app": "test"})


def container(layer: Path, logs: Path, name: str, script: str, *, tty: bool = False,
              resources: Resources = NO_LIMITS) -> ContainerConfig:
    return ContainerConfig(name=name, attempt=0, image=image(layer), argv=("sh", "-c", script),
                           log_path=logs / f"{name}.log", labels={LABEL_CONTAINER_NAME: name},
                           tty=tty, resources=resources)


async def run(rt: RuncRuntime, sid: str, config: ContainerConfig) -> str:
    cid = await rt.create_container(sid, config)
    await rt.start_container(cid)
    return cid


async def wait_exited(rt: RuncRuntime, *cids: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(cids)
    while pending:
        for cid in list(pending):
            if (await rt.container_status(cid)).state == ContainerState.EXITED:
                pending.discard(cid)
        if pending:
            assert loop.time() < deadline, f"containers did not exit: {pending}"
            await rt.wait_any_exit(0.5)


def log_lines(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = LOG_RECORD.match(line)
        assert m, f"not a CRI log record: {line!r}"
        out.append((m.group(1), m.group(3)))
    return out


async def test_pod_containers_share_ipc_and_uts_and_report_exits(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("pod1", hostname="web-0"))
    sb = await rt.sandbox_status(sid)
    assert sb.state == SandboxState.READY and sb.pid > 0 and sb.pod_name == "pod-pod1"
    script = ("hostname; for ns in ipc uts pid; do readlink /proc/self/ns/$ns; done; "
              "echo to-stderr >&2; exit {code}")
    ok = await run(rt, sid, container(busybox_layer, tmp_path, "ok", script.format(code=0)))
    bad = await run(rt, sid, container(busybox_layer, tmp_path, "bad", script.format(code=3)))

    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while seen != {ok, bad}:
        assert time.monotonic() < deadline
        seen |= set(await rt.wait_any_exit(5.0))

    ok_st, bad_st = await rt.container_status(ok), await rt.container_status(bad)
    assert (ok_st.state, ok_st.exit_code, ok_st.reason) == (ContainerState.EXITED, 0, "Completed")
    assert (bad_st.state, bad_st.exit_code, bad_st.reason) == (ContainerState.EXITED, 3, "Error")
    for st in (ok_st, bad_st):
        assert 0 < st.created_at <= st.started_at <= st.finished_at
        assert st.pid > 0 and st.sandbox_id == sid and st.image_ref == "busybox"
    assert bad_st.labels == {LABEL_CONTAINER_NAME: "bad"}
    assert bad_st.log_path == tmp_path / "bad.log"
    assert {c.id for c in await rt.list_containers(sid)} == {ok, bad}

    ok_log, bad_log = log_lines(tmp_path / "ok.log"), log_lines(tmp_path / "bad.log")
    assert ("stderr", "to-stderr") in ok_log
    ok_out = [text for stream, text in ok_log if stream == "stdout"]
    bad_out = [text for stream, text in bad_log if stream == "stdout"]
    assert ok_out[0] == bad_out[0] == "web-0"  # the pod's UTS namespace
    assert ok_out[1] == bad_out[1]  # one IPC namespace for the pod ...
    assert ok_out[1] != os.readlink("/proc/self/ns/ipc")  # ... which is not the host's
    assert ok_out[2] == bad_out[2] and ok_out[2] != os.readlink("/proc/self/ns/uts")
    assert ok_out[3] != os.readlink("/proc/self/ns/pid")  # its own PID namespace

    await rt.remove_sandbox(sid)
    assert await rt.list_sandboxes() == [] and await rt.list_containers() == []
    assert (tmp_path / "ok.log").exists()  # logs outlive the container
    with pytest.raises(NotFound):
        await rt.container_status(ok)


async def test_a_container_beyond_its_memory_limit_is_oomkilled(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("oom"))
    hog = await run(rt, sid, container(busybox_layer, tmp_path, "hog", "tail /dev/zero",
                                       resources=Resources(memory_limit=16 * 1024 * 1024)))
    await wait_exited(rt, hog, timeout=30)
    st = await rt.container_status(hog)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


async def test_a_failed_create_says_why_and_leaves_nothing(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("fail"))
    config = ContainerConfig(name="broken", attempt=0, image=image(busybox_layer),
                             argv=("/no/such/binary",), log_path=tmp_path / "broken.log")
    with pytest.raises(RuntimeFailure, match="no/such/binary.*no such file or directory"):
        await rt.create_container(sid, config)
    assert await rt.list_containers() == []
    assert [m for m in mounts_under(rt.state_dir) if m.name == "rootfs"] == []
    with pytest.raises(NotFound):
        await rt.create_container("nope", config)


async def test_containers_outlive_the_runtime_and_are_adopted(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("adopt"))
    waiter = await run(rt, sid, container(
        busybox_layer, tmp_path, "waiter",
        "trap 'echo stopping; exit 7' TERM; while true; do sleep 0.05; done"))
    victim = await run(rt, sid, container(busybox_layer, tmp_path, "victim", "sleep 60"))
    before = await rt.container_status(waiter)
    victim_pid = (await rt.container_status(victim)).pid
    await rt.close()

    # No runtime running: the container keeps going; another dies and its shim records it.
    assert proc_start(before.pid) is not None
    os.kill(victim_pid, signal.SIGKILL)
    await asyncio.sleep(0.2)

    again = RuncRuntime(rt.state_dir, rt.prefix, log_max_size=64 * 1024, log_max_files=3)
    await again.start()
    try:
        now = await again.container_status(waiter)
        assert (now.state, now.pid, now.started_at) == (ContainerState.RUNNING, before.pid,
                                                        before.started_at)
        assert (await again.sandbox_status(sid)).state == SandboxState.READY
        gone = await again.container_status(victim)
        assert (gone.state, gone.exit_code, gone.reason) == (ContainerState.EXITED, 137, "Error")
        assert await again.wait_any_exit(5.0) == [victim]  # the exit it did not see happen

        result = await again.exec_sync(waiter, ["cat", "/proc/1/cmdline"], timeout=10)
        assert (result.exit_code, result.stdout[:6]) == (0, b"sh\0-c\0"), result.stderr
        await again.stop_container(waiter, 10)
        assert await again.wait_any_exit(10.0) == [waiter]
        done = await again.container_status(waiter)
        assert (done.exit_code, done.reason) == (7, "Error")
        assert ("stdout", "stopping") in log_lines(tmp_path / "waiter.log")
    finally:
        await again.close()


async def test_exec_sync_output_exit_code_and_timeout(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("exec"))
    cid = await run(rt, sid, container(busybox_layer, tmp_path, "app", "sleep 60"))

    result = await rt.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 4"], timeout=10)
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (
        4, b"out\n", b"err\n", False)

    missing = await rt.exec_sync(cid, ["no-such-command"], timeout=10)
    assert missing.exit_code != 0 and b"no-such-command" in missing.stderr

    started = time.monotonic()
    slow = await rt.exec_sync(cid, ["sh", "-c", "echo begun; exec sleep 30"], timeout=0.5)
    assert slow.timed_out and slow.stdout == b"begun\n"
    assert time.monotonic() - started < 10
    assert await rt.runc.ps(cid) == [(await rt.container_status(cid)).pid]  # sleep was killed

    st = await rt.stats(cid)
    assert st.pids == 1 and st.memory_usage_bytes > 0 and st.cpu_usage_ns > 0

    await rt.stop_container(cid, 0)
    with pytest.raises(RuntimeFailure, match="not running"):
        await rt.exec_sync(cid, ["true"], timeout=5)


async def test_exec_streams_stdin_and_a_resizable_tty(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("stream"))
    cid = await run(rt, sid, container(busybox_layer, tmp_path, "app", "sleep 60"))

    cat = await rt.exec(cid, ["cat"], tty=False, stdin=True)
    await cat.write_stdin(b"hello from stdin\n")
    await cat.close_stdin()
    chunks = [c async for c in cat.output()]
    assert await cat.wait() == 0
    assert b"".join(d for s, d in chunks if s == 1) == b"hello from stdin\n"

    shell = await rt.exec(cid, ["sh"], tty=True, stdin=True, width=80, height=24)
    await shell.resize(123, 45)
    await asyncio.sleep(0.2)
    await shell.write_stdin(b"stty size; tty; exit 5\n")
    output = b""
    async for stream, data in shell.output():
        assert stream == 1
        output += data
    assert await shell.wait() == 5
    assert b"45 123" in output and b"/dev/pts/" in output


async def test_a_tty_container_logs_its_terminal(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("tty"))
    cid = await run(rt, sid, container(busybox_layer, tmp_path, "term", "tty; echo done",
                                       tty=True))
    await wait_exited(rt, cid)
    texts = [text.rstrip("\r") for _, text in log_lines(tmp_path / "term.log")]
    assert texts[0].startswith("/dev/pts/") and texts[1] == "done"


async def test_pause_freezes_and_resume_thaws(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("freeze"))
    cid = await run(rt, sid, container(busybox_layer, tmp_path, "ticker",
                                       "while true; do echo tick; sleep 0.02; done"))
    log = tmp_path / "ticker.log"
    await asyncio.sleep(0.2)
    await rt.pause(cid)
    frozen = len(log.read_text().splitlines())
    await asyncio.sleep(0.3)
    assert len(log.read_text().splitlines()) == frozen  # nothing runs while paused
    assert (await rt.runc.state(cid) or {})["status"] == "paused"
    await rt.resume(cid)
    await asyncio.sleep(0.3)
    assert len(log.read_text().splitlines()) > frozen
    await rt.pause(cid)
    await rt.stop_container(cid, 1)  # a paused container can still be stopped
    assert (await rt.container_status(cid)).state == ContainerState.EXITED


async def test_stop_sends_sigterm_then_sigkill_after_the_timeout(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("stop"))
    stubborn = await run(rt, sid, container(
        busybox_layer, tmp_path, "stubborn",
        "trap 'echo got TERM' TERM; while true; do sleep 0.05; done"))
    polite = await run(rt, sid, container(
        busybox_layer, tmp_path, "polite", "trap 'exit 0' TERM; while true; do sleep 0.05; done"))
    await asyncio.sleep(0.2)  # the traps are set

    started = time.monotonic()
    await rt.stop_container(stubborn, 0.5)
    assert time.monotonic() - started >= 0.5
    st = await rt.container_status(stubborn)
    assert (st.state, st.exit_code, st.reason) == (ContainerState.EXITED, 137, "Error")
    assert ("stdout", "got TERM") in log_lines(tmp_path / "stubborn.log")

    await rt.stop_container(polite, 30)
    assert (await rt.container_status(polite)).exit_code == 0  # exited on SIGTERM itself
    await rt.stop_container(polite, 30)  # idempotent

    await rt.stop_sandbox(sid)
    assert (await rt.sandbox_status(sid)).state == SandboxState.NOTREADY
    with pytest.raises(RuntimeFailure, match="not ready"):
        await rt.create_container(sid, container(busybox_layer, tmp_path, "late", "true"))


async def test_cleanup_all_removes_everything_the_cluster_made(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    sid = await rt.run_sandbox(sandbox_config("clean"))
    running = await run(rt, sid, container(busybox_layer, tmp_path, "a", "sleep 60"))
    paused = await run(rt, sid, container(busybox_layer, tmp_path, "b", "sleep 60"))
    await rt.pause(paused)
    await rt.create_container(sid, container(busybox_layer, tmp_path, "c", "sleep 60"))
    assert len(runc_list(rt)) == 4 and len(live_shims(rt.runc.root)) == 4
    pids = [(await rt.container_status(c)).pid for c in (running, paused)]
    assert len([m for m in mounts_under(rt.state_dir) if m.name == "rootfs"]) == 3

    await rt.cleanup_all()
    assert_nothing_left(rt)
    assert all(proc_start(p) is None for p in pids)


async def test_measure_shim_rss_and_start_time(
        rt: RuncRuntime, busybox_layer: Path, tmp_path: Path) -> None:
    """Numbers for the report (printed, not asserted): shim memory, create+start vs runc run."""
    sid = await rt.run_sandbox(sandbox_config("bench"))
    times = []
    cids = []
    for i in range(5):
        t0 = time.perf_counter()
        cids.append(await run(rt, sid, container(busybox_layer, tmp_path, f"s{i}", "sleep 60")))
        times.append(time.perf_counter() - t0)
    shims = live_shims(rt.runc.root)
    rss = [_status_kb(pid, "VmRSS") for pid in shims.values()]
    anon = [_status_kb(pid, "RssAnon") for pid in shims.values()]

    bundle = tmp_path / "raw"
    (bundle / "rootfs").mkdir(parents=True)
    shutil.copytree(busybox_layer, bundle / "rootfs", dirs_exist_ok=True, symlinks=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = (bundle / "config.json").read_text().replace('"terminal": true', '"terminal": false')
    (bundle / "config.json").write_text(spec.replace('"sh"', '"true"'))
    raw = []
    for i in range(5):
        t0 = time.perf_counter()
        subprocess.run(["runc", "--root", str(rt.runc.root), "run", "--bundle", str(bundle),
                        f"{rt.prefix}-raw{i}"], check=True, stdin=subprocess.DEVNULL)
        raw.append(time.perf_counter() - t0)
    print(f"\nshim RSS: {max(rss)} kB (of which anonymous {max(anon)} kB) per container")
    print(f"create+start busybox container (median of 5): {sorted(times)[2] * 1000:.1f} ms; "
          f"raw `runc run` (median of 5): {sorted(raw)[2] * 1000:.1f} ms")
    assert len(shims) == 6 and all(r > 0 for r in rss)


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0
