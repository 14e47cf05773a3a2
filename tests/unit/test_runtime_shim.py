"""The native shim (runtime/native/shim.c) against a stand-in for `runc create`.

The stand-in starts the "container" as its own background child and exits, as runc does;
the shim, a subreaper, must adopt it, log its output in the CRI format and record its exit.
Real runc is exercised in tests/integration/test_runtime_runc.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.runtime import native
from dockyard.runtime.native import proc_start

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("gcc", "cc", "clang")), reason="needs a C compiler")

FAKE_RUNC = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --pid-file) pidfile=$2; shift;; esac
  shift
done
if [ -n "$FAKE_FAIL" ]; then echo "$FAKE_FAIL" >&2; exit 1; fi
if [ -n "$FAKE_REAP" ]; then sh -c true & pid=$!; wait $pid; echo $pid > "$pidfile"; exit 0; fi
# Like runc's init, the "container" waits to be started (here: for a file) before it runs.
sh -c 'while [ ! -e "$0" ]; do sleep 0.01; done; eval "$FAKE_CMD"' "$FAKE_START" &
echo $! > "$pidfile"
"""
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) ([FP]) (.*)$")


@pytest.fixture(scope="module")
def shim() -> Path:
    return native.build().shim


STARTED: list[int] = []  # shims of the running test, killed at its end if still alive


@pytest.fixture(autouse=True)
def _no_shim_left_behind() -> Iterator[None]:
    yield
    while STARTED:
        pid = STARTED.pop()
        if proc_start(pid) is not None:
            os.kill(pid, signal.SIGKILL)


def run_shim(shim: Path, tmp: Path, cmd: str, *extra: str, fail: str = "", reap: str = ""
             ) -> subprocess.CompletedProcess[str]:
    runc = tmp / "runc"
    runc.write_text(FAKE_RUNC)
    runc.chmod(0o755)
    env = {**os.environ, "FAKE_CMD": cmd, "FAKE_FAIL": fail, "FAKE_REAP": reap,
           "FAKE_START": str(tmp / "started")}
    done = subprocess.run(
        [str(shim), "--runc", str(runc), "--root", str(tmp / "root"), "--id", "c1",
         "--bundle", str(tmp), "--pid-file", str(tmp / "pid"),
         "--exit-file", str(tmp / "exit.json"), "--log", str(tmp / "c.log"), *extra],
        capture_output=True, text=True, env=env, timeout=10)
    (tmp / "started").touch()  # `runc start`
    if done.returncode == 0:
        STARTED.append(int(done.stdout.split()[1]))
    return done


def wait_exit(tmp: Path) -> dict:
    deadline = time.monotonic() + 10
    while not (tmp / "exit.json").exists():
        assert time.monotonic() < deadline, "the shim wrote no exit record"
        time.sleep(0.01)
    return json.loads((tmp / "exit.json").read_text())


def records(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        m = RECORD.match(line)
        assert m, f"not a CRI log line: {line!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def test_output_goes_to_a_cri_log_and_the_exit_is_recorded(shim: Path, tmp_path: Path) -> None:
    done = run_shim(shim, tmp_path, 'echo hello; echo oops >&2; printf "no newline"; exit 3')
    assert done.returncode == 0, done.stderr
    container_pid, shim_pid = (int(x) for x in done.stdout.split())
    exit = wait_exit(tmp_path)
    assert exit["pid"] == container_pid
    assert (exit["exit_code"], exit["signal"], exit["oom_killed"]) == (3, 0, False)
    assert abs(exit["finished_ns"] / 1e9 - time.time()) < 60
    got = records(tmp_path / "c.log")
    assert sorted(got) == sorted([("stdout", "F", "hello"), ("stderr", "F", "oops"),
                                  ("stdout", "F", "no newline")])
    deadline = time.monotonic() + 5
    while proc_start(shim_pid) is not None:  # the shim is gone once it recorded the exit
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_shim_is_not_a_child_of_whoever_started_it(shim: Path, tmp_path: Path) -> None:
    done = run_shim(shim, tmp_path, "sleep 0.5")
    _, shim_pid = (int(x) for x in done.stdout.split())
    stat = Path(f"/proc/{shim_pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    ppid, session = int(fields[1]), int(fields[3])
    assert ppid != os.getpid()
    assert session == shim_pid  # its own session: no terminal or process group ties to us
    assert wait_exit(tmp_path)["exit_code"] == 0


def test_long_lines_are_split_into_partial_records(shim: Path, tmp_path: Path) -> None:
    run_shim(shim, tmp_path, "head -c 20000 /dev/zero | tr '\\0' a; echo; echo next")
    wait_exit(tmp_path)
    got = records(tmp_path / "c.log")
    assert [(s, t, len(x)) for s, t, x in got] == [
        ("stdout", "P", 16384), ("stdout", "F", 20000 - 16384), ("stdout", "F", 4)]


def test_a_signal_is_128_plus_its_number_and_oom_is_read_from_the_cgroup(
        shim: Path, tmp_path: Path) -> None:
    oom = tmp_path / "memory.oom_control"
    oom.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    run_shim(shim, tmp_path, "kill -9 $$", "--oom-file", str(oom))
    exit = wait_exit(tmp_path)
    assert (exit["exit_code"], exit["signal"], exit["oom_killed"]) == (137, 9, True)


def test_logs_rotate_by_size_keeping_max_files(shim: Path, tmp_path: Path) -> None:
    run_shim(shim, tmp_path, 'i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo "line $i"; done',
             "--log-max-size", "300", "--log-max-files", "3")
    wait_exit(tmp_path)
    log = tmp_path / "c.log"
    files = [log.with_name("c.log.2"), log.with_name("c.log.1"), log]
    assert all(f.exists() for f in files) and not log.with_name("c.log.3").exists()
    lines = [x for f in files for _, _, x in records(f)]
    numbers = [int(x.split()[1]) for x in lines]
    assert numbers == list(range(numbers[0], 61))  # newest kept, in order, oldest dropped
    assert numbers[0] > 1
    assert all(f.stat().st_size < 300 + 60 for f in files[:2])


def test_a_failed_create_reports_runcs_words(shim: Path, tmp_path: Path) -> None:
    done = run_shim(shim, tmp_path, "true", fail="container_linux.go: the bundle is broken")
    assert done.returncode == 1
    assert "the bundle is broken" in done.stderr
    assert not (tmp_path / "exit.json").exists()


def test_an_init_reaped_by_someone_else_is_recorded_not_waited_for(
        shim: Path, tmp_path: Path) -> None:
    done = run_shim(shim, tmp_path, "", reap="1")
    assert done.returncode == 0, done.stderr
    exit = wait_exit(tmp_path)
    assert exit["exit_code"] == 255 and "unknown" in exit["message"]
