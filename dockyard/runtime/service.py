"""The container runtime over runc: pod sandboxes and containers that outlive the agent.

Each sandbox is a pause container; each container an overlay root filesystem, an OCI bundle
from bundle.py and a `runc create` run by a native shim (native/shim.c), which stays the
container's parent, writes its CRI log and records its exit. The agent only calls runc for
short commands (start, kill, delete, exec, pause); what it learns is kept in records.py, so a
new agent process on the same state directory answers exactly as the old one did.

Host names: runc ids from naming.py, cgroups under naming.cgroup_parent(prefix), runc's state
root, mounts and helpers all under the state directory; cleanup_all() removes all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

from dockyard.runtime import bundle, naming, native, rootfs, spawn
from dockyard.runtime.cgroups import Cgroups
from dockyard.runtime.cri import (
    ContainerConfig,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    NotFound,
    RuntimeFailure,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
)
from dockyard.runtime.records import (
    ContainerRecord,
    ExitRecord,
    ExitWatcher,
    RecordStore,
    SandboxRecord,
    container_status,
    sandbox_status,
)
from dockyard.runtime.runc import Runc, RuncExec

CREATE_TIMEOUT = 60.0  # `runc create` under the shim
KILL_WAIT = 10.0  # how long a SIGKILLed container may take to be reaped and recorded


class RuncRuntime:
    name = "runc"

    def __init__(self, state_dir: Path, prefix: str, *, runc: str = "runc",
                 log_max_size: int = 10 * 1024 * 1024, log_max_files: int = 5,
                 bin_dir: Path | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self.version = "runc"
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.records = RecordStore(self.state_dir)
        self.runc = Runc(shutil.which(runc) or runc, self.state_dir / "runc")
        self.pause_rootfs = self.state_dir / "pause"
        self.cgroups = Cgroups()
        self._bin_dir = bin_dir
        self._helpers: native.NativeHelpers | None = None
        self._watcher = ExitWatcher(self.records.exits)
        self._reported: set[str] = set()
        self._orphans: dict[str, asyncio.Task[None]] = {}

    # Lifecycle

    async def start(self) -> None:
        self.records.create_dirs()
        self.runc.root.mkdir(parents=True, exist_ok=True)
        self._helpers = await asyncio.to_thread(native.build, self._bin_dir)
        await asyncio.to_thread(self._make_pause_rootfs, self._helpers.pause)
        self.version = await self.runc.version()
        self._watcher.start()
        await self._adopt()

    async def close(self) -> None:
        for task in self._orphans.values():
            task.cancel()
        self._orphans.clear()
        self._watcher.close()

    def _make_pause_rootfs(self, pause: Path) -> None:
        """A root filesystem holding only /pause, shared read-only by every sandbox."""
        for d in ("proc", "dev", "sys", "etc"):
            (self.pause_rootfs / d).mkdir(parents=True, exist_ok=True)
        target = self.pause_rootfs / "pause"
        if target.exists() and target.stat().st_size == pause.stat().st_size:
            return
        tmp = self.pause_rootfs / f".pause.{os.getpid()}"
        shutil.copy2(pause, tmp)
        os.replace(tmp, target)

    async def _adopt(self) -> None:
        """Containers of a previous agent: exits the shims recorded are simply read; a shim
        that was killed (no exit record, shim gone) is replaced by a watch on the process."""
        shims = native.live_shims(self.runc.root)
        units: list[tuple[str, int, int, int]] = [
            (r.id, r.pid, r.shim_pid, r.shim_start) for r in self.records.list_containers()]
        units += [(r.id, r.pid, r.shim_pid, r.shim_start) for r in self.records.list_sandboxes()]
        for uid, pid, shim_pid, shim_start in units:
            exit_path = self.records.exit_path(uid)
            if exit_path.exists() or uid in shims or (
                    shim_pid and native.proc_start(shim_pid) == shim_start):
                continue
            state = await self.runc.state(uid)
            if state and state.get("status") in ("running", "created", "paused") and pid:
                self._watch_orphan(uid, pid, exit_path)
            else:
                self.records.write_exit(exit_path, ExitRecord(
                    pid=pid, exit_code=255, finished_at=time.time(),
                    message="exit status unknown: the container's shim was killed"))

    def _watch_orphan(self, uid: str, pid: int, exit_path: Path) -> None:
        """A container whose shim died: record its exit (status unknown) when it ends."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            self.records.write_exit(exit_path, ExitRecord(pid=pid, exit_code=255,
                                                          finished_at=time.time()))
            return

        async def watch() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
            try:
                await done
                self.records.write_exit(exit_path, ExitRecord(
                    pid=pid, exit_code=255, finished_at=time.time(),
                    message="exit status unknown: the container's shim was killed"))
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                self._orphans.pop(uid, None)

        self._orphans[uid] = asyncio.create_task(watch())

    # Sandboxes

    async def run_sandbox(self, config: SandboxConfig) -> str:
        sid = naming.sandbox_id(self.prefix, config.pod_uid)
        old = self.records.load_sandbox(sid)
        if old is not None:
            if self._sandbox_status(old).state == SandboxState.READY:
                return sid
            await self.remove_sandbox(sid)
        cgroups_path = f"{naming.cgroup_parent(self.prefix)}/{config.pod_uid}/{sid}"
        rec = SandboxRecord(id=sid, pod_uid=config.pod_uid, pod_name=config.pod_name,
                            namespace=config.namespace, hostname=config.hostname,
                            netns_path=config.netns_path, cgroups_path=cgroups_path,
                            created_at=time.time(), labels=dict(config.labels))
        self.records.save_sandbox(rec)
        bundle_dir = self.records.sandbox_dir(sid)
        try:
            spec = bundle.sandbox_spec(config, rootfs=self.pause_rootfs, argv=["/pause"],
                                       cgroups_path=cgroups_path)
            _write_spec(bundle_dir, spec)
            rec.pid, rec.shim_pid = await self._create(
                sid, bundle_dir, log_path=None, tty=False, cgroups_path=cgroups_path)
            rec.shim_start = native.proc_start(rec.shim_pid) or 0
            self.records.save_sandbox(rec)
            await self.runc.start(sid)
        except (RuntimeFailure, OSError) as e:
            await self._forget_sandbox(rec)
            raise RuntimeFailure(f"cannot start the sandbox of pod "
                                 f"{config.namespace}/{config.pod_name}: {e}") from e
        return sid

    async def stop_sandbox(self, sandbox_id: str) -> None:
        rec = self.records.load_sandbox(sandbox_id)
        if rec is None:
            return  # as containerd: stopping a sandbox that is gone has nothing to do
        await asyncio.gather(*(self.stop_container(c.id, 0) for c in
                               self.records.list_containers() if c.sandbox_id == sandbox_id))
        exit_path = self.records.sandbox_exit_path(sandbox_id)
        if not exit_path.exists() and rec.pid:
            with contextlib.suppress(RuntimeFailure):
                await self.runc.kill(sandbox_id, signal.SIGKILL)
            if not await self._watcher.wait_for(exit_path, KILL_WAIT):
                raise RuntimeFailure(f"the pause process of sandbox {sandbox_id} (pid "
                                     f"{rec.pid}) did not exit after SIGKILL")
        rec.stopped = True
        self.records.save_sandbox(rec)

    async def remove_sandbox(self, sandbox_id: str) -> None:
        rec = self.records.load_sandbox(sandbox_id)
        if rec is None:
            return
        await self.stop_sandbox(sandbox_id)
        for c in self.records.list_containers():
            if c.sandbox_id == sandbox_id:
                await self.remove_container(c.id)
        await self._forget_sandbox(rec)

    async def _forget_sandbox(self, rec: SandboxRecord) -> None:
        await self._reap(rec.id, rec.pid)
        await self.runc.delete(rec.id, force=True)
        self.cgroups.remove(f"{naming.cgroup_parent(self.prefix)}/{rec.pod_uid}")
        self.records.delete_sandbox(rec.id)

    async def _reap(self, uid: str, pid: int) -> None:
        """Kill a created container and wait for its shim's exit record, so no record can
        land after the id is forgotten (and then shadow a new container of the same id)."""
        exit_path = self.records.exit_path(uid)
        if not pid or exit_path.exists():
            return
        with contextlib.suppress(RuntimeFailure):
            await self.runc.kill(uid, signal.SIGKILL, all=True)
        await self._watcher.wait_for(exit_path, KILL_WAIT)

    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        return self._sandbox_status(self._sandbox(sandbox_id))

    async def list_sandboxes(self) -> list[SandboxStatus]:
        return [self._sandbox_status(r) for r in self.records.list_sandboxes()]

    def _sandbox_status(self, rec: SandboxRecord) -> SandboxStatus:
        return sandbox_status(rec, self.records.read_exit(self.records.sandbox_exit_path(rec.id)))

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        rec = self.records.load_sandbox(sandbox_id)
        if rec is None:
            raise NotFound(f"pod sandbox {sandbox_id} not found")
        return rec

    # Containers

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sb = self._sandbox(sandbox_id)
        if self._sandbox_status(sb).state != SandboxState.READY:
            raise RuntimeFailure(f"pod sandbox {sandbox_id} is not ready (its pause process "
                                 "has exited); the pod's sandbox must be recreated")
        cid = naming.container_id(self.prefix, sb.pod_uid, config.name, config.attempt)
        if self.records.load_container(cid) is not None:
            raise RuntimeFailure(f"container {config.name} (attempt {config.attempt}) of pod "
                                 f"{sb.namespace}/{sb.pod_name} already exists as {cid}; "
                                 "remove it first")
        cgroups_path = f"{naming.cgroup_parent(self.prefix)}/{sb.pod_uid}/{cid}"
        log_path = config.log_path if str(config.log_path) not in ("", ".") else None
        rec = ContainerRecord(
            id=cid, sandbox_id=sandbox_id, pod_uid=sb.pod_uid, name=config.name,
            attempt=config.attempt, image_ref=config.image.ref, image_id=config.image.image_id,
            log_path=str(log_path or ""), cgroups_path=cgroups_path, created_at=time.time(),
            labels=dict(config.labels), tty=config.tty)
        self.records.save_container(rec)
        cdir = self.records.container_dir(cid)
        try:
            rootfs.mount_overlay(config.image.layer_dirs, cdir / "upper", cdir / "work",
                                 cdir / "rootfs")
            namespaces = bundle.PodNamespaces(network=sb.netns_path,
                                              ipc=f"/proc/{sb.pid}/ns/ipc",
                                              uts=f"/proc/{sb.pid}/ns/uts")
            spec = bundle.container_spec(config, rootfs=cdir / "rootfs", namespaces=namespaces,
                                         cgroups_path=cgroups_path)
            _write_spec(cdir, spec)
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
            rec.pid, rec.shim_pid = await self._create(cid, cdir, log_path=log_path,
                                                       tty=config.tty, cgroups_path=cgroups_path)
            rec.shim_start = native.proc_start(rec.shim_pid) or 0
            self.records.save_container(rec)
        except (RuntimeFailure, OSError) as e:
            await self._forget_container(rec)
            raise RuntimeFailure(f"cannot create container {config.name} of pod "
                                 f"{sb.namespace}/{sb.pod_name}: {e}") from e
        return cid

    async def _create(self, cid: str, bundle_dir: Path, *, log_path: Path | None, tty: bool,
                      cgroups_path: str) -> tuple[int, int]:
        """`runc create` under a new shim; (container pid, shim pid)."""
        assert self._helpers is not None, "RuncRuntime.start() was not called"
        args = [str(self._helpers.shim), "--runc", self.runc.binary, "--root",
                str(self.runc.root), "--id", cid, "--bundle", str(bundle_dir),
                "--pid-file", str(bundle_dir / "pid"),
                "--exit-file", str(self.records.exit_path(cid)),
                "--runc-log", str(bundle_dir / "runc.log"),
                "--oom-file", str(self.cgroups.oom_file(cgroups_path))]
        if log_path is not None:
            args += ["--log", str(log_path), "--log-max-size", str(self.log_max_size),
                     "--log-max-files", str(self.log_max_files)]
        if tty:
            args.append("--tty")
        try:
            done = await spawn.run(args, timeout=CREATE_TIMEOUT, new_session=True)
        except TimeoutError:
            raise RuntimeFailure(f"runc create did not finish in {CREATE_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            raise RuntimeFailure(_runc_message(done.stderr.decode(errors="replace")))
        pid, shim_pid = (int(x) for x in done.stdout.split())
        return pid, shim_pid

    async def start_container(self, container_id: str) -> None:
        rec = self._container(container_id)
        if self.records.exit_path(container_id).exists():
            raise RuntimeFailure(f"container {rec.name} ({container_id}) has already exited; "
                                 "create a new attempt")
        if rec.started_at:
            return
        started = time.time()  # before: a quick container may have exited when start returns
        await self.runc.start(container_id)
        rec.started_at = started
        self.records.save_container(rec)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        rec = self._container(container_id)
        exit_path = self.records.exit_path(container_id)
        if exit_path.exists():
            return
        if rec.paused:
            await self.resume(container_id)
        if timeout > 0:
            with contextlib.suppress(RuntimeFailure):
                await self.runc.kill(container_id, signal.SIGTERM)
            if await self._watcher.wait_for(exit_path, timeout):
                return
        try:
            await self.runc.kill(container_id, signal.SIGKILL, all=True)
        except RuntimeFailure as e:
            if not await self._watcher.wait_for(exit_path, 1.0):
                raise RuntimeFailure(f"cannot stop container {rec.name}: {e}") from e
        if not await self._watcher.wait_for(exit_path, KILL_WAIT):
            raise RuntimeFailure(f"container {rec.name} ({container_id}, pid {rec.pid}) did "
                                 f"not exit within {KILL_WAIT:.0f}s of SIGKILL")

    async def remove_container(self, container_id: str) -> None:
        rec = self.records.load_container(container_id)
        if rec is None:
            return
        if not self.records.exit_path(container_id).exists():
            await self.stop_container(container_id, 0)
        await self._forget_container(rec)

    async def _forget_container(self, rec: ContainerRecord) -> None:
        await self._reap(rec.id, rec.pid)
        await self.runc.delete(rec.id, force=True)
        rootfs.unmount(self.records.container_dir(rec.id) / "rootfs")
        self.cgroups.remove(rec.cgroups_path)
        self.records.delete_container(rec.id)
        self._reported.discard(rec.id)

    async def container_status(self, container_id: str) -> ContainerStatus:
        return self._status(self._container(container_id))

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        return [self._status(r) for r in self.records.list_containers()
                if sandbox_id is None or r.sandbox_id == sandbox_id]

    def _status(self, rec: ContainerRecord) -> ContainerStatus:
        return container_status(rec, self.records.read_exit(self.records.exit_path(rec.id)))

    def _container(self, container_id: str) -> ContainerRecord:
        rec = self.records.load_container(container_id)
        if rec is None:
            raise NotFound(f"container {container_id} not found")
        return rec

    async def wait_any_exit(self, timeout: float) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            since = self._watcher.generation
            new = {cid for cid in self.records.exited_container_ids() - self._reported
                   if self.records.container_dir(cid).is_dir()}
            if new:
                self._reported |= new
                return sorted(new)
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._watcher.changed(since, remaining):
                return []

    # Exec, stats, freeze

    async def exec_sync(self, container_id: str, argv: list[str], timeout: float,
                        ) -> ExecResult:
        session = await self._exec(container_id, argv, tty=False, stdin=False)
        out, err = bytearray(), bytearray()

        async def collect() -> None:
            async for stream, chunk in session.output():
                (out if stream == 1 else err).extend(chunk)

        reader = asyncio.create_task(collect())
        try:
            code = await asyncio.wait_for(session.wait(), timeout)
            timed_out = False
        except TimeoutError:
            await session.kill()
            code = await session.wait()
            timed_out = True
        finally:
            session.close()
        # A process the command left behind may hold its output open: do not wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 0.5)
        reader.cancel()
        return ExecResult(exit_code=code, stdout=bytes(out), stderr=bytes(err),
                          timed_out=timed_out)

    async def exec(self, container_id: str, argv: list[str], *, tty: bool, stdin: bool,
                   width: int = 80, height: int = 24) -> RuncExec:
        return await self._exec(container_id, argv, tty=tty, stdin=stdin, width=width,
                                height=height)

    async def _exec(self, container_id: str, argv: list[str], *, tty: bool, stdin: bool,
                    width: int = 80, height: int = 24) -> RuncExec:
        rec = self._container(container_id)
        if self.records.exit_path(container_id).exists() or not rec.started_at:
            raise RuntimeFailure(f"container {rec.name} is not running; cannot exec in it")
        if not argv:
            raise RuntimeFailure("no command given to exec")
        pid_file = self.records.container_dir(container_id) / f"exec-{uuid.uuid4().hex}.pid"
        return await RuncExec.spawn(self.runc, container_id, argv, tty=tty, stdin=stdin,
                                    pid_file=pid_file, width=width, height=height)

    async def stats(self, container_id: str) -> ContainerStats:
        return self.cgroups.stats(self._container(container_id).cgroups_path)

    async def pause(self, container_id: str) -> None:
        rec = self._container(container_id)
        await self.runc.pause(container_id)
        rec.paused = True
        self.records.save_container(rec)

    async def resume(self, container_id: str) -> None:
        rec = self._container(container_id)
        await self.runc.resume(container_id)
        rec.paused = False
        self.records.save_container(rec)

    # Host hygiene

    async def cleanup_all(self) -> None:
        """Every runc container of this root killed and deleted, shims gone, overlays
        unmounted, cgroups under the prefix removed, the state directory emptied."""
        errors: list[str] = []
        if self.runc.root.is_dir():
            for c in await self.runc.list():
                if c.get("status") == "paused":
                    with contextlib.suppress(RuntimeFailure):
                        await self.runc.resume(c["id"])
                with contextlib.suppress(RuntimeFailure):
                    await self.runc.kill(c["id"], signal.SIGKILL, all=True)
            for c in await self.runc.list():
                try:
                    await self.runc.delete(c["id"], force=True)
                except RuntimeFailure as e:
                    errors.append(str(e))
        await native.end_shims(self.runc.root)
        for mount in rootfs.mounts_under(self.state_dir):
            try:
                rootfs.unmount(mount)
            except RuntimeFailure as e:
                errors.append(str(e))
        try:
            self.cgroups.remove(naming.cgroup_parent(self.prefix))
        except RuntimeFailure as e:
            errors.append(str(e))
        await self.close()
        if self.state_dir.is_dir() and not rootfs.mounts_under(self.state_dir):
            for entry in self.state_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if errors:
            raise RuntimeFailure("cleanup left something behind: " + "; ".join(errors))


def _write_spec(bundle_dir: Path, spec: dict) -> None:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "config.json").write_text(json.dumps(spec))


def _runc_message(text: str) -> str:
    """runc's error in one line: `runc create failed: <why>` without logrus decoration."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("{"):
            with contextlib.suppress(ValueError):
                return str(json.loads(ln).get("msg", ln))
    return lines[-1] if lines else "runc create failed without a message"
