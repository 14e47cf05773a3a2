"""kubelet's AtomicWriter for configMap, secret, downward API and projected volumes, and
fsGroup ownership of a volume (kubelet's SetVolumeOwnership).

The files of a volume are symlinks into `..data`, itself a symlink to a timestamped directory
that is swapped by one rename, so a reader (a container watching the volume) never sees half
an update, and an unchanged payload is not rewritten at all.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from dockyard.api.fielderrors import go_quote

Payload = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)
DATA_DIR = "..data"


class PayloadPathError(Exception):
    """A payload path AtomicWriter refuses; the message is kubelet's."""


def _check_payload_path(path: str) -> str:
    """AtomicWriter's validatePath: relative, no `..` element, not starting with `..`."""
    clean = os.path.normpath(path)
    if not path or os.path.isabs(path) or clean.startswith("..") or ".." in path.split("/"):
        raise PayloadPathError(f"invalid path {go_quote(path)}: must be relative, without '..'")
    return clean


def _tree(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def _same_payload(old: Path, payload: Payload) -> bool:
    files = {p for p in _tree(old) if not (old / p).is_dir()}
    if files != set(payload):
        return False
    return all((old / path).read_bytes() == data for path, (data, _) in payload.items())


def write_atomic(target: Path, payload: Payload, fs_group: int | None = None) -> bool:
    """Make `target` hold exactly `payload` (kubelet's AtomicWriter.Write); True if it changed.

    The new files go to a fresh `..<timestamp>.<random>` directory, a `..data_tmp` symlink to
    it is renamed over `..data` (atomic), then the visible top-level names are symlinks to
    `..data/<name>` and names no longer in the payload are removed.
    """
    payload = {_check_payload_path(p): v for p, v in payload.items()}
    data_link = target / DATA_DIR
    try:
        old_name = os.readlink(data_link)
    except OSError:
        old_name = ""
    old_dir = target / old_name if old_name else None
    old_paths = _tree(old_dir) if old_dir and old_dir.is_dir() else set()
    changed = not (old_dir and old_dir.is_dir() and _same_payload(old_dir, payload))
    if changed:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
        os.chmod(new_dir, 0o755)
        for path, (data, mode) in payload.items():
            file = new_dir / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
            os.chmod(file, mode)
        if fs_group is not None:
            set_volume_ownership(target, fs_group, readonly=True)
        tmp_link = target / "..data_tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, data_link)
    for top in {p.split("/", 1)[0] for p in payload}:
        link = target / top
        if not os.path.lexists(link):
            os.symlink(f"{DATA_DIR}/{top}", link)
    if changed:
        keep = {"/".join(p.split("/")[:n]) for p in payload for n in range(1, p.count("/") + 2)}
        for path in old_paths - keep:
            if "/" not in path and os.path.islink(target / path):
                os.unlink(target / path)
        for entry in target.iterdir():  # the old version, and any left by a crash
            if entry.name.startswith("..") and entry.name not in (DATA_DIR, new_dir.name):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() \
                    else entry.unlink()
    return changed


def set_volume_ownership(root: Path, gid: int, readonly: bool, policy: str = "Always") -> None:
    """fsGroup (kubelet's SetVolumeOwnership): group `gid` on everything, g+rw (g+r for
    read-only volumes), directories g+x and setgid so new files inherit the group."""
    mask = 0o440 if readonly else 0o660
    if policy == "OnRootMismatch":
        st = root.stat()
        wanted = mask | stat.S_ISGID | 0o110
        if st.st_gid == gid and stat.S_IMODE(st.st_mode) & wanted == wanted:
            return
    paths = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
    for path in paths:
        st = os.lstat(path)
        os.chown(path, -1, gid, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            continue  # chmod would reach the target and undo its mode
        mode = stat.S_IMODE(st.st_mode) | mask
        if stat.S_ISDIR(st.st_mode):
            mode |= stat.S_ISGID | 0o110
        os.chmod(path, mode)
