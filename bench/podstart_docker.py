"""Docker baseline: Debian's docker.io, in a dockerd the benchmark starts and stops itself.

The daemon is private to the run: its data root, exec root, pid file, socket, config file,
cgroup parent and bridge are the benchmark's own, and it may not touch the host's firewall or
forwarding (--iptables/--ip6tables/--ip-forward/--ip-masq=false). The bridge is created here
with the benchmark's prefix and a free 10.200.0.0/13 subnet; if dockerd refuses it, containers
run with `--network none` on `--bridge=none`. `stop()` removes all of it, whatever happened.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # the client of the same package (not another docker on PATH)
# What dockerd/containerd 20.10 write outside the roots they are given; removed after the run
# when they were not there before it (deepest first).
HOST_PATHS = [Path("/etc/docker/key.json"), Path("/run/containerd/s"), Path("/run/containerd"),
              Path("/run/docker/plugins"), Path("/run/docker")]


def ensure_installed() -> None:
    if not (os.path.exists(DOCKERD) and os.path.exists(DOCKER)):
        # Installs without starting the system dockerd (which would add NAT rules).
        script = Path(__file__).resolve().parent.parent / "scripts" / "install-docker.sh"
        subprocess.run(["bash", str(script)], check=True)


class DockerBench:
    def __init__(self, work: Path, prefix: str, subnet: ipaddress.IPv4Network) -> None:
        self.work = work
        self.prefix = prefix
        self.bridge = f"{prefix}dk"
        self.subnet = subnet
        self.sock = work / "docker.sock"
        self.proc: subprocess.Popen | None = None
        self.network = "bridge"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}",
                    "DOCKER_CONFIG": str(work / "client")}
        self.version = ""
        self.stopping = False
        self.preexisting = [p for p in HOST_PATHS if p.exists()]

    # -- daemon ---------------------------------------------------------------------------

    def _make_bridge(self) -> bool:
        gateway = next(self.subnet.hosts())
        try:
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True,
                           capture_output=True)
            subprocess.run(["ip", "addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev",
                            self.bridge], check=True, capture_output=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True,
                           capture_output=True)
            return True
        except subprocess.CalledProcessError:
            return False

    def _dockerd(self, bridge: str) -> bool:
        (self.work / "daemon.json").write_text("{}")
        for sub in ("data", "exec", "client"):
            (self.work / sub).mkdir(exist_ok=True)
        log = open(self.work / "dockerd.log", "ab")
        self.proc = subprocess.Popen([
            DOCKERD, "--config-file", str(self.work / "daemon.json"),
            "--data-root", str(self.work / "data"), "--exec-root", str(self.work / "exec"),
            "--pidfile", str(self.work / "dockerd.pid"), "-H", f"unix://{self.sock}",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
            "--bridge", bridge, "--cgroup-parent", f"/{self.prefix}-docker",
            "--storage-driver", "overlay2", "--userland-proxy=false",
        ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            ok = subprocess.run([DOCKER, "version", "-f", "{{.Server.Version}}"], env=self.env,
                                capture_output=True, text=True)
            if ok.returncode == 0:
                self.version = ok.stdout.strip()
                return True
            time.sleep(0.2)
        return False

    def start(self, archive: Path) -> None:
        ensure_installed()
        self.work.mkdir(parents=True, exist_ok=True)
        if not (self._make_bridge() and self._dockerd(self.bridge)):
            self.stop_daemon()
            self.network = "none"
            if not self._dockerd("none"):
                raise RuntimeError("dockerd did not start: "
                                   + (self.work / "dockerd.log").read_text()[-2000:])
        self.docker("load", "-i", str(archive))

    def docker(self, *args: str) -> str:
        return subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True,
                              check=True).stdout

    # -- measuring ------------------------------------------------------------------------

    def _cmd(self, *args: str) -> str:
        done = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def start_one(self, i: int) -> tuple[float, float]:
        """(seconds until `docker inspect` says running, seconds of `docker run -d` alone)."""
        name = f"{self.prefix}-d{i}"
        t0 = time.perf_counter()
        self._cmd("run", "-d", "--name", name, "--network", self.network, "busybox",
                  "sleep", "3600")
        command = time.perf_counter() - t0
        while self._cmd("inspect", "-f", "{{.State.Running}}", name) != "true":
            if time.perf_counter() - t0 > 60 or self.stopping:
                raise RuntimeError(f"{name} not running after 60 s")
            time.sleep(0.005)
        return time.perf_counter() - t0, command

    def run(self, count: int, rate: float) -> dict:
        """Open loop, like the pods: a `docker run` every 1/rate s, whatever the others do.
        Threads, not asyncio subprocesses: an interrupted run then just waits for the CLI
        calls in flight instead of hanging in asyncio's child watcher."""
        self.start_one(-1)  # warm-up: first container, first overlay, first veth
        pool = ThreadPoolExecutor(max_workers=min(count, 200))
        futures = []
        try:
            begin = time.perf_counter()
            for i in range(count):
                delay = begin + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.start_one, i))
            results = [f.result() for f in futures]
        finally:
            self.stopping = True  # on an interrupt: in-flight threads finish their call only
            pool.shutdown(wait=True, cancel_futures=True)
            self.stopping = False
        return {"start": [r[0] for r in results], "command": [r[1] for r in results]}

    def one_at_a_time(self, count: int) -> dict:
        """Each `docker run` alone on the machine: the number quoted as docker's start time."""
        results = [self.start_one(10_000 + i) for i in range(count)]
        return {"start": [r[0] for r in results], "command": [r[1] for r in results]}

    def remove_all(self) -> float:
        """`docker rm -f` of every container this run made; seconds it took."""
        t0 = time.perf_counter()
        ids = self.docker("ps", "-aq", "--filter", f"name={self.prefix}-").split()
        if ids:
            self.docker("rm", "-f", *ids)
        return time.perf_counter() - t0

    # -- teardown -------------------------------------------------------------------------

    def stop_daemon(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Its managed containerd and any shim are in its session: none may outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def stop(self) -> None:
        """Containers, daemon, mounts, bridge, cgroups: all gone, even after a failure."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.remove_all()
            except (subprocess.CalledProcessError, OSError):
                pass
        self.stop_daemon()
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(str(self.work))]
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        for controller in Path("/sys/fs/cgroup").iterdir():
            parent = controller / f"{self.prefix}-docker"
            if parent.is_dir():
                for child in sorted(parent.rglob("*"), key=lambda p: len(p.parts),
                                    reverse=True):
                    if child.is_dir():
                        child.rmdir()
                parent.rmdir()
        shutil.rmtree(self.work, ignore_errors=True)
        for path in HOST_PATHS:
            if path in self.preexisting or not path.exists():
                continue
            try:
                path.rmdir() if path.is_dir() else path.unlink()
            except OSError:  # not empty: another dockerd/containerd uses it now
                pass
