"""The runtime's two native helpers, compiled from C on first use and cached by source hash.

`shim` is the parent of each container (a Python process per container would cost ~10 MB;
the shim costs ~100 KB); `pause` is the init of every pod sandbox and must be static because
the sandbox's root filesystem holds nothing else. Compiling here instead of shipping binaries
keeps the package pure Python; the cache is keyed by the source's hash, so a changed source
is rebuilt and parallel clusters share one build. The shims' processes are found again by
their command line (`--root <runc root>`), which is how a new agent or `cleanup` sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dockyard.runtime.cri import RuntimeFailure

SOURCES = Path(__file__).resolve().parent / "native"
CFLAGS = ("-O2", "-Wall", "-Wno-unused-result")


@dataclass(frozen=True)
class NativeHelpers:
    shim: Path
    pause: Path


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dockyard" / "bin"


def find_compiler() -> str:
    for candidate in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise RuntimeFailure(
        "no C compiler found to build the container shim and pause process: "
        "install one (Debian: apt-get install gcc libc6-dev) or set CC")


def build(cache_dir: Path | None = None) -> NativeHelpers:
    """Compile (or reuse) both helpers; blocking, run it in a thread."""
    directory = cache_dir or default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeFailure(f"cannot create the native helper cache {directory}: {e}") from e
    return NativeHelpers(shim=_binary(directory, "shim", static_required=False),
                         pause=_binary(directory, "pause", static_required=True))


def _binary(directory: Path, name: str, *, static_required: bool) -> Path:
    source = SOURCES / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    target = directory / f"{name}-{digest}"
    if target.exists():
        return target
    compiler = find_compiler()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
    os.close(fd)
    try:
        attempts = [["-static"], []] if not static_required else [["-static"]]
        error = ""
        for extra in attempts:
            done = subprocess.run([compiler, *CFLAGS, *extra, "-o", tmp, str(source)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)  # atomic: a parallel build of the same hash is identical
                return target
            error = done.stderr.strip()
        hint = " (a static build needs the C library's static archive: apt-get install " \
               "libc6-dev)" if static_required else ""
        raise RuntimeFailure(f"cannot compile {source.name} with {compiler}{hint}: {error}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# The shims' processes

def proc_start(pid: int) -> int | None:
    """A live process's start time (clock ticks since boot), None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def live_shims(runc_root: Path) -> dict[str, int]:
    """Container id -> pid of every live shim serving this runc root."""
    found: dict[str, int] = {}
    root = str(runc_root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if (len(args) > 6 and os.path.basename(args[0]).startswith("shim-")
                and _arg(args, "--root") == root and proc_start(int(entry)) is not None):
            found[_arg(args, "--id") or ""] = int(entry)
    return found


def _arg(args: list[str], flag: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return args[args.index(flag) + 1]
    return None


async def end_shims(runc_root: Path) -> None:
    """Shims exit by themselves once their container is gone; wait a little, then kill."""
    for _ in range(40):
        if not live_shims(runc_root):
            return
        await asyncio.sleep(0.05)
    for pid in live_shims(runc_root).values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
