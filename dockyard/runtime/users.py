"""Who a container's process runs as: the image's User or runAsUser/runAsGroup, resolved
against the container's own /etc/passwd and /etc/group (never the host's).

The rules are runc's/Docker's (libcontainer's GetExecUser) and containerd's CRI:
- "" means root; a number not in passwd is used as is, with gid 0 and home "/";
- a name must be in passwd (else `unable to find user NAME: no matching entries in passwd
  file`); its primary gid is passwd's;
- "user:group" overrides the gid; a group name must be in /etc/group;
- without an explicit group, the groups listing the user as a member are added;
- runAsUser replaces the user part (and its passwd gid applies unless runAsGroup is given);
  supplementalGroups and fsGroup are always added.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class UserError(ValueError):
    """The user or group cannot be resolved in the image."""


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]  # the primary gid first, as `id -G` shows
    home: str = "/"
    name: str = ""


@dataclass(frozen=True)
class _Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def resolve(rootfs: Path, image_user: str = "", *, run_as_user: int | None = None,
            run_as_group: int | None = None, supplemental_groups: Iterable[int] = ()
            ) -> ExecUser:
    """The uid, gid and groups of the container's process."""
    user_part, _, group_part = (image_user or "").partition(":")
    if run_as_user is not None:
        user_part, group_part = str(run_as_user), ""
    if run_as_group is not None:
        group_part = str(run_as_group)
    passwd = _read_passwd(rootfs)
    groups = _read_group(rootfs)
    entry = _find_user(passwd, user_part or "0")
    uid = entry.uid if entry else int(user_part or 0)
    gid = entry.gid if entry else 0
    home = entry.home if entry else "/"
    name = entry.name if entry else ""
    extra: list[int] = []
    if group_part:
        gid = _find_group(groups, group_part)
    elif name:
        extra = [g.gid for g in groups if name in g.members]
    all_gids = [gid, *extra, *supplemental_groups]
    return ExecUser(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(all_gids)),
                    home=home, name=name)


def _find_user(passwd: list[_Passwd], spec: str) -> _Passwd | None:
    if spec.isdigit():
        uid = int(spec)
        return next((p for p in passwd if p.uid == uid), None)
    for entry in passwd:
        if entry.name == spec:
            return entry
    raise UserError(f"unable to find user {spec}: no matching entries in passwd file")


def _find_group(groups: list[_Group], spec: str) -> int:
    if spec.isdigit():
        return int(spec)
    for group in groups:
        if group.name == spec:
            return group.gid
    raise UserError(f"unable to find group {spec}: no matching entries in group file")


def _read_passwd(rootfs: Path) -> list[_Passwd]:
    entries = []
    for fields in _records(rootfs, "/etc/passwd"):
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            home = fields[5] if len(fields) > 5 and fields[5] else "/"
            entries.append(_Passwd(fields[0], int(fields[2]), int(fields[3]), home))
    return entries


def _read_group(rootfs: Path) -> list[_Group]:
    entries = []
    for fields in _records(rootfs, "/etc/group"):
        if len(fields) >= 3 and fields[2].isdigit():
            members = tuple(m for m in (fields[3] if len(fields) > 3 else "").split(",") if m)
            entries.append(_Group(fields[0], int(fields[2]), members))
    return entries


def _records(rootfs: Path, path: str) -> list[list[str]]:
    try:
        text = scoped_path(rootfs, path).read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def scoped_path(rootfs: Path, path: str) -> Path:
    """`path` inside `rootfs`, following symlinks as the container would see them: an
    absolute link target is taken relative to the rootfs, `..` never leaves it."""
    current = Path(rootfs)
    links = 0
    parts = [p for p in path.split("/") if p not in ("", ".")]
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current != Path(rootfs):
                current = current.parent
            continue
        candidate = current / part
        if candidate.is_symlink():
            links += 1
            if links > 40:
                raise OSError(f"too many symlinks resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = Path(rootfs)
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = candidate
    return current
