"""Mounts for pod volumes: mount(2)/umount2(2) through ctypes, mount points read back from
/proc/self/mountinfo, and symlink-safe open and mkdir for subPath binds.

Mounts are found again by path in mountinfo, not remembered, so whatever an earlier agent
mounted below a directory is unmounted too. The subPath helpers walk a path one component at a
time without following symlinks (kubelet's PrepareSafeSubpath and SafeMakeDir), so a container
that swaps a directory for a symlink cannot make a bind escape its volume (CVE-2017-1002101).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 2, 4, 8, 4096
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: str | Path, fstype: str | None, flags: int,
          data: str = "") -> None:
    """mount(2) directly: no process per mount on the pod start path."""
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None,
                   flags, data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def umount(target: str | Path) -> None:
    """Detach a mount (lazily, so a container still using it never blocks teardown)."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mount_points_under(root: Path | str) -> list[str]:
    """Mount points at or below `root` (its real path) in this mount namespace, deepest
    first: what an agent must unmount, whichever process mounted it."""
    real = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = _unescape(line.split()[4])
            if point == real or point.startswith(real + "/"):
                found.append(point)
    return sorted(found, key=lambda p: (-p.count("/"), p))


def unmount_all(root: Path | str) -> None:
    """Unmount everything below `root`, stacked mounts included (`dockyard cleanup`)."""
    for _ in range(16):
        points = mount_points_under(root)
        if not points:
            return
        for point in points:
            umount(point)
    raise OSError(errno.EBUSY, f"mounts under {root} remain: {mount_points_under(root)}")


def _open_flags(final: bool) -> int:
    return os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if final else os.O_DIRECTORY)


def safe_open(root: str, rel: str) -> int:
    """An O_PATH descriptor of root/rel reached component by component, none a symlink."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    try:
        for i, part in enumerate(parts):
            child = os.open(part, _open_flags(i == len(parts) - 1), dir_fd=fd)
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, f"symlink {part} not allowed in a subPath")
        return fd
    except BaseException:
        os.close(fd)
        raise


def safe_makedirs(root: str, rel: str) -> None:
    """mkdir -p of root/rel (SafeMakeDir): the volume's mode, no symlink followed."""
    perm = stat.S_IMODE(os.stat(root).st_mode)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in rel.split("/") if p not in ("", ".")]:
            try:
                os.mkdir(part, perm, dir_fd=fd)
                _fchmod_at(fd, part, perm)
            except FileExistsError:
                pass
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _fchmod_at(dir_fd: int, name: str, perm: int) -> None:
    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=dir_fd)
    try:
        os.fchmod(child, perm)  # past the umask, as the volume's own mode
    finally:
        os.close(child)
