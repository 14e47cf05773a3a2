"""Container root filesystems: an overlay of the image's layers, one writable upper per container.

Image layers are unpacked once and shared read-only (overlay lowerdirs); each container gets
its own upper and work directory, so starting a container copies nothing and what it writes
is removed with it. mount(2) is called directly (no `mount` process per container).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from collections.abc import Sequence
from pathlib import Path

from dockyard.runtime.cri import RuntimeFailure

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
MAX_OPTIONS = 4095  # mount(2) copies at most one page of options


def overlay_options(layers: Sequence[Path], upper: Path, work: Path) -> str:
    """Layers lowest first (as ImageSpec.layer_dirs); overlay wants the top lowerdir first."""
    if not layers:
        raise RuntimeFailure("the image has no layers to mount")
    for layer in layers:
        if "," in str(layer) or ":" in str(layer):
            raise RuntimeFailure(f"layer path {layer} contains ',' or ':' which overlayfs "
                                 "cannot take; move the image store to a plain path")
    lower = ":".join(str(p) for p in reversed(layers))
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


def mount_overlay(layers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    options = overlay_options(layers, upper, work)
    if len(options) > MAX_OPTIONS:
        raise RuntimeFailure(f"the image has too many layers ({len(layers)}) for one overlay "
                             "mount; flatten it or use a shorter image store path")
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        missing = [str(p) for p in layers if not p.is_dir()]
        hint = f": missing layer directories {missing}" if missing else ""
        raise RuntimeFailure(f"cannot mount the root filesystem at {target}: "
                             f"{os.strerror(err)}{hint}")


def unmount(target: Path) -> None:
    """Unmount if mounted (idempotent); lazily if something still holds it."""
    path = os.fsencode(target)
    if _libc.umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return
    if err == errno.EBUSY and _libc.umount2(path, MNT_DETACH) == 0:
        return
    raise RuntimeFailure(f"cannot unmount {target}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root` (from this process's mountinfo), deepest first."""
    base = os.path.realpath(root)
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return [Path(p) for p in sorted(set(found), key=len, reverse=True)]


def is_mounted(target: Path) -> bool:
    return Path(os.path.realpath(target)) in mounts_under(target)
