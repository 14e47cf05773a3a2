"""Images built on this machine from Debian's packages, since there is no registry to pull from.

- `busybox`: busybox-static's /bin/busybox and a symbolic link per applet; reproducible (same
  package, same image ID) and built in a fraction of a second.
- `debian:bookworm-slim`: `debootstrap --variant=minbase bookworm` from the Debian mirror this
  machine's apt uses, trimmed as Docker's slim images are (no docs, man pages, locales or apt
  caches). Minutes and the network, so the layer tar is cached per machine.
- `python:3.11`: that layer plus one made by installing python3 through an overlay mount of
  it: the overlay's upper directory *is* the new layer. Also cached.

Building into a store is then only adding cached layer tars, so each new cluster data
directory gets these images in seconds. Host mounts made while building live in a private
mount namespace (`unshare --mount`) and vanish with it, even if the build crashes.
"""

from __future__ import annotations

import datetime
import fcntl
import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockyard.runtime.imagearchive import ImageError, host_arch
from dockyard.runtime.imagelayers import scan_layer, write_layer
from dockyard.runtime.imageref import normalize
from dockyard.runtime.images import Image, ImageStore

Obj = dict[str, Any]
Builder = Callable[[ImageStore, Path], Image]

BUSYBOX = Path("/bin/busybox")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What Docker's debian:*-slim images leave out (debuerreotype's --slim), also for later installs.
DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
"""
_APT_RM = ("rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb "
           "/var/cache/apt/*.bin || true")
APT_CLEAN = f"""\
DPkg::Post-Invoke {{ "{_APT_RM}"; }};
APT::Update::Post-Invoke {{ "{_APT_RM}"; }};
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
"""
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def default_cache_dir() -> Path:
    """Where built layers are kept, once per machine ($DOCKYARD_IMAGE_CACHE overrides)."""
    env = os.environ.get("DOCKYARD_IMAGE_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/dockyard/images")
    return Path("~/.cache/dockyard/images").expanduser()


def build(store: ImageStore, ref: str, cache_dir: Path | None = None) -> Image:
    """Build one of KNOWN_BUILDS into the store."""
    builder = KNOWN_BUILDS.get(normalize(ref))
    if builder is None:
        raise ImageError(f"there is no local build for {ref!r}; buildable images: "
                         f"{', '.join(BUILDABLE)}")
    return builder(store, cache_dir or default_cache_dir())


def _rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _config(created: float, cmd: list[str], env: list[str], history: list[str]) -> Obj:
    stamp = _rfc3339(created)
    return {"architecture": host_arch(), "os": "linux", "created": stamp,
            "config": {"Env": env, "Cmd": cmd},
            "history": [{"created": stamp, "created_by": h} for h in history]}


# ------------------------------------------------------------------------------------ busybox


def _is_static(binary: Path) -> bool:
    """No PT_INTERP program header: the ELF needs no dynamic loader (runs in an empty root)."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            return False
        endian = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack(endian + "Q", head[0x20:0x28])
        phentsize, phnum = struct.unpack(endian + "HH", head[0x36:0x3A])
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack(endian + "I", table[i * phentsize:i * phentsize + 4])[0] != 3
               for i in range(phnum))


def build_busybox(store: ImageStore, cache_dir: Path) -> Image:
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise ImageError(f"building busybox needs a static {BUSYBOX}: "
                         "apt-get install busybox-static")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    banner = subprocess.run([BUSYBOX, "--help"], capture_output=True, text=True).stdout
    version = m.group(1) if (m := re.search(r"BusyBox v(\S+)", banner)) else "unknown"
    mtime = int(BUSYBOX.stat().st_mtime)

    with tempfile.TemporaryDirectory(prefix="dockyard-busybox-") as tmp:
        layer = Path(tmp) / "layer.tar.gz"
        with open(layer, "wb") as raw, \
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0,
                              compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "",
                    uid: int = 0) -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime, info.linkname = kind, mode, mtime, link
                info.uid = info.gid = uid
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data else None)

            for d, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755),
                            ("proc", 0o555), ("root", 0o700), ("sys", 0o555), ("tmp", 0o1777),
                            ("usr", 0o755), ("usr/sbin", 0o755), ("var", 0o755),
                            ("var/spool", 0o755), ("var/spool/mail", 0o755), ("var/www", 0o755)):
                add(d, tarfile.DIRTYPE, mode)
            add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
            for applet in sorted(set(applets) - {"busybox"}):
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
            add("etc/passwd", tarfile.REGTYPE, 0o644,
                b"root:x:0:0:root:/root:/bin/sh\n"
                b"nobody:x:65534:65534:nobody:/home:/bin/false\n")
            add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnobody:x:65534:\n")
            add("etc/hosts", tarfile.REGTYPE, 0o644, HOSTS.encode())
        config = _config(mtime, ["sh"], [PATH_ENV],
                         [f"dockyard: busybox-static {version}, {len(applets)} applets"])
        return store.add_image([layer], config, ["busybox:latest"])


# ------------------------------------------------------------------------------ debian, python


@contextmanager
def _cache_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """One build per machine at a time; a second builder waits, then uses the cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cached(cache_dir: Path, name: str) -> tuple[Path, Obj] | None:
    layer, meta = cache_dir / f"{name}.tar.gz", cache_dir / f"{name}.json"
    if layer.exists() and meta.exists():  # meta is written last
        return layer, json.loads(meta.read_text())
    return None


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ImageError(f"building {what} needs root (debootstrap, chroot and mounts)")


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")


def debian_mirror() -> str:
    """The Debian mirror apt uses here for bookworm (deb822 .sources or one-line .list)."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for para in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", para, re.M))
                if ("deb" in fields.get("Types", "").split()
                        and SUITE in fields.get("Suites", "").split()
                        and fields.get("Enabled", "yes").lower() != "no"):
                    return fields.get("URIs", "").split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def _slim(rootfs: Path) -> None:
    """Trim a debootstrapped root as Docker's slim images are, and drop host details."""
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(DPKG_SLIM)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(APT_CLEAN)
    share = rootfs / "usr/share"
    for sub in ("man", "info", "groff", "lintian", "linda"):
        for p in (share / sub).glob("*"):
            _rm(p)
    for p in (share / "locale").glob("*"):
        if p.name != "locale.alias":
            _rm(p)
    for pkg in (share / "doc").glob("*"):
        for p in pkg.glob("*") if pkg.is_dir() and not pkg.is_symlink() else [pkg]:
            if p.name != "copyright":
                _rm(p)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*", "var/log/*.log", "var/log/apt/*",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "dev/*", "proc/*",
                    "sys/*", "run/*", "tmp/*", "etc/resolv.conf", "etc/hostname",
                    "etc/machine-id", "var/cache/ldconfig/aux-cache"):
        for p in rootfs.glob(pattern):
            if p.name not in ("partial", "lock"):
                _rm(p)
    (rootfs / "etc/hosts").write_text(HOSTS)


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def debian_layer(cache_dir: Path) -> tuple[Path, Obj]:
    """The cached debian:bookworm-slim layer, built with debootstrap if missing."""
    name = f"debian-{SUITE}-slim"
    with _cache_lock(cache_dir, name):
        if found := _cached(cache_dir, name):
            return found
        _require_root("debian:bookworm-slim")
        mirror = debian_mirror()
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir))
        try:
            rootfs = work / "rootfs"
            _run(["unshare", "--mount", "--propagation", "private", "debootstrap",
                  "--variant=minbase", SUITE, str(rootfs), mirror], work / "build.log",
                 f"debootstrap --variant=minbase {SUITE} from {mirror}")
            _slim(rootfs)
            created = time.time()
            write_layer(rootfs, cache_dir / f"{name}.tar.gz", mtime_clamp=int(created))
            meta = {"created": created, "mirror": mirror, "suite": SUITE}
            (cache_dir / f"{name}.json").write_text(json.dumps(meta))
            return cache_dir / f"{name}.tar.gz", meta
        finally:
            shutil.rmtree(work, ignore_errors=True)


_PYTHON_SCRIPT = """\
set -e
mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work},\
redirect_dir=off,metacopy=off {root}
mount -t proc proc {root}/proc
mount -t tmpfs -o mode=755 tmpfs {root}/dev
mknod -m 666 {root}/dev/null c 1 3
mknod -m 666 {root}/dev/zero c 1 5
mknod -m 666 {root}/dev/full c 1 7
mknod -m 666 {root}/dev/random c 1 8
mknod -m 666 {root}/dev/urandom c 1 9
mount -t tmpfs tmpfs {root}/tmp
mount -t tmpfs tmpfs {root}/run
cp /etc/resolv.conf {root}/etc/resolv.conf
chroot {root} /usr/bin/env -i {path} DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 sh -ec '
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3
  apt-get clean
  find /var/lib/apt/lists -mindepth 1 -maxdepth 1 ! -name partial ! -name lock -exec rm -rf {{}} +
  rm -rf /var/log/apt/* /var/log/*.log /var/cache/debconf/*-old /var/lib/dpkg/*-old \
         /var/cache/ldconfig/aux-cache'
rm -f {root}/etc/resolv.conf
v=$(chroot {root} /usr/bin/python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case $v in 3.11.*) ;; *) echo "python3 is $v, not 3.11" >&2; exit 1;; esac
ln -s /usr/bin/python3.11 {root}/usr/local/bin/python3.11
ln -s python3.11 {root}/usr/local/bin/python3
ln -s python3.11 {root}/usr/local/bin/python
echo "$v" > {version}
"""


def python_layer(cache_dir: Path, debian: Path) -> tuple[Path, Obj]:
    """The cached python3.11 layer over the debian one: apt-get install python3 through an
    overlay mount, whose upper directory becomes the layer."""
    name = "python-3.11"
    with _cache_lock(cache_dir, name):
        if found := _cached(cache_dir, name):
            return found
        _require_root("python:3.11")
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir))
        try:
            dirs = {k: work / k for k in ("lower", "upper", "work", "root")}
            for d in dirs.values():
                d.mkdir()
            scan_layer(debian, dirs["lower"])
            script = _PYTHON_SCRIPT.format(**{k: str(v) for k, v in dirs.items()},
                                           path=PATH_ENV, version=work / "version")
            _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                 work / "build.log", "installing python3 in the debian image")
            created = time.time()
            write_layer(dirs["upper"], cache_dir / f"{name}.tar.gz", overlay_upper=True,
                        lower=dirs["lower"], mtime_clamp=int(created))
            meta = {"created": created, "python_version": (work / "version").read_text().strip()}
            (cache_dir / f"{name}.json").write_text(json.dumps(meta))
            return cache_dir / f"{name}.tar.gz", meta
        finally:
            shutil.rmtree(work, ignore_errors=True)


def build_debian(store: ImageStore, cache_dir: Path) -> Image:
    layer, meta = debian_layer(cache_dir)
    config = _config(meta["created"], ["bash"], [PATH_ENV],
                     [f"debootstrap --variant=minbase {SUITE} {meta['mirror']} (slim)"])
    return store.add_image([layer], config, [f"debian:{SUITE}-slim"])


def build_python(store: ImageStore, cache_dir: Path) -> Image:
    debian, debian_meta = debian_layer(cache_dir)
    layer, meta = python_layer(cache_dir, debian)
    version = meta["python_version"]
    config = _config(meta["created"], ["python3"],
                     [PATH_ENV, "LANG=C.UTF-8", f"PYTHON_VERSION={version}"],
                     [f"debootstrap --variant=minbase {SUITE} (slim)",
                      f"apt-get install python3 ({version})"])
    config["history"][0]["created"] = _rfc3339(debian_meta["created"])
    return store.add_image([debian, layer], config, ["python:3.11"])


KNOWN_BUILDS: dict[str, Builder] = {
    normalize("busybox"): build_busybox,
    normalize(f"debian:{SUITE}-slim"): build_debian,
    normalize("python:3.11"): build_python,
}
BUILDABLE = ("busybox", f"debian:{SUITE}-slim", "python:3.11")
