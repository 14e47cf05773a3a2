"""OCI layer tars <-> directories in overlayfs form.

An OCI layer marks deletions with whiteout files (`.wh.name`, and `.wh..wh..opq` for "hide
everything below this directory"); overlayfs marks them with a 0/0 character device and the
`trusted.overlay.opaque` attribute. Unpacking converts the first form into the second, so an
unpacked layer is directly an overlay lowerdir; packing an overlay upper directory converts
back, so a change made through an overlay mount becomes a layer.

Unpacking never follows a symbolic link it has written (an entry under `etc/` after a layer
made `etc -> /etc` would otherwise write to the host), refuses `..` and relative links that
climb out of the layer, and hashes while it reads: one pass gives the blob digest, the
diff_id and the unpacked tree.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_CHUNK = 1 << 20


class UnsafeLayer(Exception):
    """A layer tries to write outside itself or through a link, or is malformed."""


@dataclass(frozen=True)
class LayerScan:
    digest: str  # sha256 of the blob as stored (compressed or not)
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # bytes of file content
    compressed: bool


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def scan_layer(blob: Path, dest: Path | None) -> LayerScan:
    """Digest and diff_id of a layer blob (gzip or plain tar) and, with `dest` (an empty
    directory), its tree unpacked there in overlay form."""
    with open(blob, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic[:4] == b"\x28\xb5\x2f\xfd":
            raise UnsafeLayer("zstd-compressed layers are not supported")
        raw = _Hashing(f)
        compressed = magic[:2] == b"\x1f\x8b"
        plain = _Hashing(gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw)  # type: ignore[arg-type]
        try:
            with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
                size = _Unpacker(str(dest)).run(tar) if dest else sum(
                    m.size for m in tar if m.isreg())
            plain.drain()
            raw.drain()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise UnsafeLayer(f"not a valid layer tar: {e}") from None
    return LayerScan("sha256:" + raw.hash.hexdigest(), "sha256:" + plain.hash.hexdigest(),
                     size, compressed)


def _clean(name: str) -> str:
    """A member name relative to the layer root; `..` anywhere is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"entry {name!r} climbs out of the layer")
    return "/".join(parts)


class _Unpacker:
    def __init__(self, root: str) -> None:
        self.root = root
        self.as_root = os.geteuid() == 0
        self.dirs = {""}  # verified real directories (relative paths)
        self.dir_members: dict[str, tarfile.TarInfo] = {}
        self.size = 0

    def run(self, tar: tarfile.TarFile) -> int:
        os.chmod(self.root, 0o755)  # unless the layer says otherwise (a "./" entry)
        for m in tar:
            self._member(tar, m)
        for rel in sorted(self.dir_members, key=lambda r: r.count("/") + bool(r),
                          reverse=True):  # deepest first, so mtimes stick
            path = os.path.join(self.root, rel) if rel else self.root
            if stat.S_ISDIR(os.lstat(path).st_mode):
                self._attrs(path, self.dir_members[rel])
        return self.size

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = _clean(m.name)
        parent, base = posixpath.split(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base)
            return
        if not rel:
            if not m.isdir():
                raise UnsafeLayer("the layer root is not a directory")
            self.dir_members[""] = m
            return
        target = os.path.join(self._dir(parent), base)
        if m.isdir():
            st = _lstat(target)
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._remove(rel)
                os.mkdir(target, 0o755)
            self.dirs.add(rel)
            self.dir_members[rel] = m
            return
        self._remove(rel)
        if m.isreg():
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            src = tar.extractfile(m)
            with os.fdopen(fd, "wb") as out:
                if src is not None:
                    shutil.copyfileobj(src, out, _CHUNK)
            self.size += m.size
        elif m.issym():
            if not m.linkname.startswith("/"):
                depth = parent.split("/") if parent else []
                for part in m.linkname.split("/"):
                    if part == "..":
                        if not depth:
                            raise UnsafeLayer(f"symbolic link {rel!r} -> {m.linkname!r} "
                                              "points outside the layer")
                        depth.pop()
                    elif part not in ("", "."):
                        depth.append(part)
            os.symlink(m.linkname, target)
        elif m.islnk():
            src_rel = _clean(m.linkname)
            src_parent = self._dir(posixpath.dirname(src_rel), create=False)
            source = os.path.join(src_parent, posixpath.basename(src_rel))
            st = _lstat(source)
            if not src_rel or st is None or stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"hard link {rel!r} -> {m.linkname!r}: no such file in "
                                  "the layer")
            os.link(source, target, follow_symlinks=False)
            return  # the inode's attributes are the target's
        elif m.ischr() or m.isblk():
            if not self.as_root:
                return  # as Docker rootless: device nodes need CAP_MKNOD
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(target, 0o600)
        else:
            return
        self._attrs(target, m)

    def _whiteout(self, parent: str, base: str) -> None:
        if not self.as_root:
            raise UnsafeLayer("this layer deletes files (whiteouts); unpacking it for "
                              "overlayfs needs root")
        directory = self._dir(parent)
        if base == WHITEOUT_OPAQUE:
            os.setxattr(directory, OPAQUE_XATTR, b"y")
            return
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise UnsafeLayer(f"bad whiteout {posixpath.join(parent, base)!r}")
        self._remove(posixpath.join(parent, name))
        os.mknod(os.path.join(directory, name), stat.S_IFCHR, os.makedev(0, 0))

    def _dir(self, rel: str, create: bool = True) -> str:
        """The real directory `rel`, made if missing; never through a symbolic link."""
        path = os.path.join(self.root, rel) if rel else self.root
        if rel in self.dirs:
            return path
        self._dir(posixpath.dirname(rel), create)
        st = _lstat(path)
        if st is None:
            if not create:
                raise UnsafeLayer(f"{rel!r} does not exist in the layer")
            os.mkdir(path, 0o755)
        elif stat.S_ISLNK(st.st_mode):
            raise UnsafeLayer(f"{rel!r} is a symbolic link: no entry may be written through it")
        elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and create:
            os.unlink(path)  # deleted below, recreated here: hide what was below
            os.mkdir(path, 0o755)
            os.setxattr(path, OPAQUE_XATTR, b"y")
        elif not stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"{rel!r} is not a directory")
        self.dirs.add(rel)
        return path

    def _remove(self, rel: str) -> None:
        path = os.path.join(self.root, rel)
        st = _lstat(path)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            prefix = rel + "/"
            self.dirs = {d for d in self.dirs if d != rel and not d.startswith(prefix)}
            self.dir_members = {d: m for d, m in self.dir_members.items()
                                if d != rel and not d.startswith(prefix)}
        else:
            os.unlink(path)

    def _attrs(self, path: str, m: tarfile.TarInfo) -> None:
        if self.as_root:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
        if not m.issym():
            os.chmod(path, m.mode & 0o7777)  # after chown, which clears set-id bits
        for key, value in m.pax_headers.items():
            if key.startswith(_XATTR_PAX) and not key.startswith(_XATTR_PAX + "trusted.overlay."):
                try:
                    os.setxattr(path, key[len(_XATTR_PAX):],
                                value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError:
                    pass  # e.g. security.selinux without SELinux, user.* on a symlink
        mtime = int(m.mtime * 1_000_000_000)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------- packing


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, Path]]:
    """Entries under root, sorted, parents before children; links are not followed."""
    base = root / rel if rel else root
    for name in sorted(os.listdir(base)):
        child = f"{rel}/{name}" if rel else name
        path = root / child
        yield child, path
        if path.is_dir() and not path.is_symlink():
            yield from _walk(root, child)


def _xattrs(path: Path) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in sorted(names):
        if name.startswith("trusted.overlay."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[_XATTR_PAX + name] = value.decode("utf-8", "surrogateescape")
    return out


def write_layer(source: Path, out: Path, *, overlay_upper: bool = False,
                lower: Path | None = None, mtime_clamp: int | None = None) -> None:
    """Pack a directory into a gzip layer tar, reproducibly (sorted entries, numeric owners,
    no gzip timestamp). With `overlay_upper`, the directory is an overlay upper directory
    and its whiteouts and opaque directories become OCI whiteout files; given the `lower`
    directory it was mounted over, directories that are new (overlayfs marks them opaque
    too) get no opaque marker, since there is nothing below them to hide."""
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0,
                              compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        def marker(rel: str, mtime: int) -> None:
            info = tarfile.TarInfo(rel)
            info.mtime = mtime
            tar.addfile(info)

        for rel, path in _walk(source):
            st = os.lstat(path)
            mtime = int(st.st_mtime) if mtime_clamp is None else min(int(st.st_mtime),
                                                                      mtime_clamp)
            if overlay_upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent, name = posixpath.split(rel)
                marker(posixpath.join(parent, WHITEOUT_PREFIX + name), mtime)
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            if info is None:  # a socket
                continue
            info.uname = info.gname = ""
            info.mtime = mtime
            info.pax_headers = _xattrs(path)
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if overlay_upper and info.isdir():
                try:
                    opaque = os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False)
                except OSError:
                    opaque = b""
                if opaque == b"y" and (lower is None or (lower / rel).is_dir()):
                    marker(f"{rel}/{WHITEOUT_OPAQUE}", mtime)
    os.replace(tmp, out)
