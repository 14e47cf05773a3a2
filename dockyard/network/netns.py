"""Named network namespaces under /run/netns, made with system calls instead of `ip netns`.

A pod's namespace is created on the start path of every pod, so it must be cheap. `ip netns add`
costs a fork and an exec (~3 ms); pyroute2's `netns.create` forks the whole agent process. Here a
short-lived thread does what `ip netns add` does: unshare(CLONE_NEWNET) (a network namespace is
per thread, so the rest of the agent never leaves the host's), bind-mount its
/proc/.../ns/net onto /run/netns/NAME, and the thread ends. That takes well under a millisecond,
and the result is interchangeable with `ip netns`: same directory, same shared-mount setup, so
`ip netns exec NAME ...` works on our namespaces and the CNI plugins open them by path.

Deleting is an unmount and an unlink; the kernel frees the namespace (and the veth end inside
it, which takes its host peer along) once no process is left in it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import threading
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

_run_dir_ready = False
_run_dir_lock = threading.Lock()


class NetnsError(Exception):
    """A network namespace could not be created or removed."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"{what}: {os.strerror(err)}") from OSError(err, os.strerror(err))


def _enc(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> int:
    return _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, None)


def path_of(name: str) -> str:
    return str(NETNS_RUN_DIR / name)


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """Whether `path` is a mounted namespace (nsfs files all share one device number)."""
    try:
        return os.stat(path).st_dev == _nsfs_dev()
    except OSError:
        return False


def exists(name: str) -> bool:
    return is_netns(path_of(name))


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does, so a namespace mounted or
    unmounted here is seen the same way in mount namespaces created later."""
    global _run_dir_ready
    with _run_dir_lock:
        if _run_dir_ready:
            return
        NETNS_RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        target = str(NETNS_RUN_DIR)
        if _mount("none", target, None, MS_SHARED | MS_REC) != 0:
            if ctypes.get_errno() != errno.EINVAL:
                _check(-1, f"make {target} a shared mount")
            # Not a mount point yet: bind it onto itself, then share it.
            _check(_mount(target, target, "none", MS_BIND | MS_REC), f"bind-mount {target}")
            _check(_mount("none", target, None, MS_SHARED | MS_REC), f"share {target}")
        _run_dir_ready = True


def _create_sync(path: str) -> None:
    """Runs in a thread of its own: only that thread ever enters the new namespace."""
    _prepare_run_dir()
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        if is_netns(path):
            return  # already there: creating is idempotent
        # An empty file left by a crash between create and mount: mount over it.
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            me = f"/proc/self/task/{threading.get_native_id()}/ns/net"
            _check(_mount(me, path, "none", MS_BIND), f"bind-mount the namespace on {path}")
        finally:
            # Not strictly needed (the thread ends), but leave nothing to chance.
            _libc.setns(own, CLONE_NEWNET)
    except BaseException:
        _remove_sync(path)
        raise
    finally:
        os.close(own)


def _remove_sync(path: str) -> None:
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted / not there: fine
            raise NetnsError(f"unmount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def create(name: str) -> str:
    """Create /run/netns/NAME (idempotent) and return its path."""
    path = path_of(name)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            _create_sync(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(_settle, done, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, None)

    # A fresh thread, never a pooled one: a thread that entered a namespace is not reused.
    threading.Thread(target=run, name=f"netns-{name}", daemon=True).start()
    await done
    return path


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def delete(name: str) -> None:
    """Unmount and remove /run/netns/NAME (idempotent). Two system calls: no thread needed."""
    _remove_sync(path_of(name))


def list_names(prefix: str) -> list[str]:
    """Names of the namespaces of one cluster (`<prefix>-...`)."""
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix + "-"))
    except FileNotFoundError:
        return []
