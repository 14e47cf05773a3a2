"""The local image store: archives in, overlay-ready layers out, garbage collected on rm."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dockyard.runtime.imagebuild import build_busybox
from dockyard.runtime.imagelayers import write_layer
from dockyard.runtime.images import (
    DigestMismatch,
    ImageError,
    ImageInUse,
    ImageStore,
    InvalidReference,
    familiar,
    normalize,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts and ownership need root")


# ------------------------------------------------------------------------ archive builders


def layer_tar(entries: list[tuple]) -> bytes:
    """entries: (name, kind, payload, mode[, uid, gid]) with kind in file/dir/sym/link/chr/
    fifo; payload is the content (file), link target (sym/link) or (major, minor) (chr)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode, *owner in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1_700_000_000
            info.uid, info.gid = owner if owner else (0, 0)
            data = None
            if kind == "file":
                data = io.BytesIO(payload)
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, data)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes], cmd: list[str] | None = None) -> bytes:
    diff_ids = [sha(gzip.decompress(x) if x[:2] == b"\x1f\x8b" else x) for x in layers]
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "created": "2024-01-02T03:04:05Z",
                       "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"],
                                  "WorkingDir": "/srv", "User": "1000"},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def docker_archive(path: Path, images: list[tuple[list[str], list[bytes], bytes | None]]) -> Path:
    """`docker save` layout: manifest.json, <config hex>.json, <n>/layer.tar."""
    files: dict[str, bytes] = {}
    manifest = []
    for tags, layers, config in images:
        config = config or config_for(layers)
        config_name = sha(config)[7:] + ".json"
        files[config_name] = config
        names = []
        for layer in layers:
            name = f"{sha(layer)[7:19]}/layer.tar"
            files[name] = layer
            names.append(name)
        manifest.append({"Config": config_name, "RepoTags": tags, "Layers": names})
    files["manifest.json"] = json.dumps(manifest).encode()
    return write_tar(path, files)


def oci_archive(path: Path, ref_name: str, layers: list[bytes],
                tamper: bytes | None = None) -> tuple[Path, str]:
    """An OCI image layout as a tar; returns it and the manifest digest."""
    config = config_for(layers)
    blobs = {sha(config): config}
    descriptors = []
    for layer in layers:
        blobs[sha(layer)] = layer
        media = "application/vnd.oci.image.layer.v1.tar" + (
            "+gzip" if layer[:2] == b"\x1f\x8b" else "")
        descriptors.append({"mediaType": media, "digest": sha(layer), "size": len(layer)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": descriptors}).encode()
    blobs[sha(manifest)] = manifest
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
             "index.json": json.dumps(index).encode()}
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest[7:]}"] = tamper if tamper and data == layers[0] else data
    return write_tar(path, files), sha(manifest)


BASE = [("etc", "dir", None, 0o755), ("etc/a", "file", b"a1\n", 0o644),
        ("etc/b", "file", b"b1\n", 0o644), ("opaq", "dir", None, 0o755),
        ("opaq/old1", "file", b"x", 0o644), ("opaq/old2", "file", b"y", 0o644),
        ("keep", "dir", None, 0o755), ("keep/x", "file", b"keep\n", 0o600)]
TOP = [("etc/.wh.a", "file", b"", 0o644), ("opaq/.wh..wh..opq", "file", b"", 0o644),
       ("opaq/new", "file", b"new\n", 0o644), ("etc/c", "file", b"c2\n", 0o644)]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------- references


@pytest.mark.parametrize("ref, expected", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("user/app", "docker.io/user/app:latest"),
    ("localhost:5000/x:1", "localhost:5000/x:1"),
    ("localhost/x", "localhost/x:latest"),
    ("quay.io/a/b/c:v1.2-rc", "quay.io/a/b/c:v1.2-rc"),
    ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ("busybox:1@sha256:" + "b" * 64, "docker.io/library/busybox:1@sha256:" + "b" * 64),
])
def test_references_normalize_as_docker(ref: str, expected: str) -> None:
    assert normalize(ref) == expected
    assert normalize(familiar(expected)) == expected


@pytest.mark.parametrize("ref", ["Busybox", "busybox:", "busy box", "", "a" * 64,
                                 "busybox@sha256:abc", "-x", "x:" + "t" * 200])
def test_malformed_references_are_refused(ref: str) -> None:
    with pytest.raises(InvalidReference):
        normalize(ref)


def test_uppercase_message_says_lowercase() -> None:
    with pytest.raises(InvalidReference, match="must be lowercase"):
        normalize("Busybox")


# -------------------------------------------------------------------------------- imports


@needs_root
def test_docker_save_import_applies_whiteouts_in_overlay_form(store: ImageStore,
                                                              tmp_path: Path) -> None:
    base, top = layer_tar(BASE), gzip.compress(layer_tar(TOP))  # plain and gzip layers
    archive = docker_archive(tmp_path / "app.tar", [(["example.com/team/app:1"], [base, top],
                                                     None)])
    [image] = store.import_archive(archive)
    assert image.repo_tags == ("example.com/team/app:1",)
    assert store.resolve("example.com/team/app:1") == image
    assert image.id == sha(config_for([base, top]))
    assert len(image.layer_dirs) == 2
    lower, upper = image.layer_dirs  # lowest first
    assert (lower / "etc/a").read_text() == "a1\n"
    whiteout = os.lstat(upper / "etc/a")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(upper / "opaq", "trusted.overlay.opaque") == b"y"
    assert not (upper / "etc/.wh.a").exists() and not (upper / "opaq/.wh..wh..opq").exists()

    # What a container sees: the layers as overlay lowerdirs (in a private mount namespace).
    view = tmp_path / "view"
    view.mkdir()
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t overlay overlay -o lowerdir={upper}:{lower} {view} && cd {view} && "
         "find . | sort && cat keep/x opaq/new"],
        capture_output=True, text=True, check=True).stdout.split()
    assert out == [".", "./etc", "./etc/b", "./etc/c", "./keep", "./keep/x", "./opaq",
                   "./opaq/new", "keep", "new"]


def test_oci_archive_import_by_tag_and_digest(store: ImageStore, tmp_path: Path) -> None:
    layers = [gzip.compress(layer_tar([("bin", "dir", None, 0o755),
                                       ("bin/tool", "file", b"#!/bin/sh\n", 0o755)]))]
    archive, manifest_digest = oci_archive(tmp_path / "oci.tar", "localhost:5000/x:1", layers)
    [image] = store.import_archive(archive)
    assert image.manifest_digest == manifest_digest
    assert image.repo_tags == ("localhost:5000/x:1",)
    assert image.repo_digests == (f"localhost:5000/x@{manifest_digest}",)
    assert store.resolve(f"localhost:5000/x@{manifest_digest}") == image
    assert store.resolve(f"other/x@{manifest_digest}") is None  # digests are per repository
    assert store.resolve(image.id) == image
    assert store.resolve(image.short_id) == image
    assert store.resolve("localhost:5000/x:2") is None
    assert (image.layer_dirs[0] / "bin/tool").read_text() == "#!/bin/sh\n"
    assert list(store.tmp.iterdir()) == []
    assert os.stat(image.layer_dirs[0] / "bin/tool").st_mode & 0o777 == 0o755
    view = store.inspect("localhost:5000/x:1")
    assert view["Id"] == image.id and view["RepoTags"] == ["localhost:5000/x:1"]
    assert view["Config"]["User"] == "1000" and view["Config"]["WorkingDir"] == "/srv"
    assert view["Config"]["Entrypoint"] is None and view["Os"] == "linux"
    assert view["RootFS"]["Layers"] == list(image.diff_ids)
    assert view["Size"] == len(b"#!/bin/sh\n")


def test_gzip_compressed_docker_save_archive(store: ImageStore, tmp_path: Path) -> None:
    plain = docker_archive(tmp_path / "a.tar", [(["a:1"], [layer_tar(BASE)], None)])
    packed = tmp_path / "a.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    [image] = store.import_archive(packed)
    assert image.repo_tags == ("a:1",)
    assert (image.layer_dirs[0] / "keep/x").read_text() == "keep\n"


def _nothing_left(store: ImageStore) -> None:
    assert store.list() == []
    assert list(store.layers.iterdir()) == []
    assert list(store.blobs.iterdir()) == []
    assert list(store.tmp.iterdir()) == []  # no staging debris either


def test_layer_content_that_does_not_match_the_config_is_refused(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    good, evil = layer_tar(BASE), layer_tar([("etc", "dir", None, 0o755),
                                             ("etc/evil", "file", b"!", 0o644)])
    archive = docker_archive(tmp_path / "x.tar", [(["x:1"], [evil], config_for([good]))])
    with pytest.raises(DigestMismatch, match="diff_id"):
        store.import_archive(archive)
    _nothing_left(store)


def test_oci_blob_that_does_not_match_its_digest_is_refused(store: ImageStore,
                                                           tmp_path: Path) -> None:
    layer = layer_tar(BASE)
    tampered = layer.replace(b"keep\n", b"evil\n")
    archive, _ = oci_archive(tmp_path / "oci.tar", "localhost/x:1", [layer], tamper=tampered)
    with pytest.raises(DigestMismatch):
        store.import_archive(archive)
    _nothing_left(store)


@pytest.mark.parametrize("entries, why", [
    ([("../escape", "file", b"x", 0o644)], "climbs out"),
    ([("a/../../escape", "file", b"x", 0o644)], "climbs out"),
    ([("lnk", "sym", "../../../../etc", 0o777)], "points outside"),
    ([("d", "dir", None, 0o755), ("d/lnk", "sym", "../..", 0o777)], "points outside"),
    ([("hl", "link", "../../etc/passwd", 0o644)], "climbs out"),
    ([("hl", "link", "missing", 0o644)], "no such file"),
])
def test_path_traversal_is_refused(store: ImageStore, tmp_path: Path, entries: list[tuple],
                                   why: str) -> None:
    archive = docker_archive(tmp_path / "x.tar", [(["x:1"], [layer_tar(entries)], None)])
    with pytest.raises(ImageError, match=why):
        store.import_archive(archive)
    _nothing_left(store)
    assert not (tmp_path / "escape").exists()


def test_writing_through_a_symlink_is_refused(store: ImageStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = layer_tar([("etc", "sym", str(outside), 0o777),  # absolute: fine as a link ...
                       ("etc/passwd", "file", b"pwned\n", 0o644)])  # ... not to write through
    archive = docker_archive(tmp_path / "x.tar", [(["x:1"], [layer], None)])
    with pytest.raises(ImageError, match="symbolic link"):
        store.import_archive(archive)
    assert list(outside.iterdir()) == []
    _nothing_left(store)


def test_a_failed_unpack_leaves_nothing_half_made(store: ImageStore, tmp_path: Path) -> None:
    [busybox] = [build_busybox(store, tmp_path)]
    before = (store.root / "index.json").read_bytes()
    many = [(f"f{i}", "file", b"data" * 100, 0o644) for i in range(50)]
    bad = layer_tar([*many, ("../late-escape", "file", b"x", 0o644)])
    archive = docker_archive(tmp_path / "x.tar", [(["x:1"], [bad], None)])
    with pytest.raises(ImageError):
        store.import_archive(archive)
    assert (store.root / "index.json").read_bytes() == before
    assert [d.name for d in store.layers.iterdir()] == [busybox.diff_ids[0][7:]]
    assert list(store.tmp.iterdir()) == []
    (store.tmp / "unpack-crashed").mkdir()  # as a writer killed mid-unpack leaves it
    store.tag("busybox", "bb:2")  # the next writer clears it
    assert list(store.tmp.iterdir()) == []


@needs_root
def test_ownership_modes_links_and_devices_are_kept(store: ImageStore, tmp_path: Path) -> None:
    layer = layer_tar([
        ("bin", "dir", None, 0o755), ("bin/su", "file", b"su", 0o4755, 0, 0),
        ("home", "dir", None, 0o755), ("home/u", "dir", None, 0o700, 1000, 1000),
        ("home/u/f", "file", b"mine", 0o640, 1000, 1001),
        ("bin/sh", "sym", "/bin/busybox", 0o777), ("bin/su2", "link", "bin/su", 0o755),
        ("dev", "dir", None, 0o755), ("dev/null", "chr", (1, 3), 0o666),
        ("run", "dir", None, 0o755), ("run/fifo", "fifo", None, 0o600)])
    archive = docker_archive(tmp_path / "x.tar", [(["x:1"], [layer], None)])
    [image] = store.import_archive(archive)
    root = image.layer_dirs[0]
    su = os.lstat(root / "bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755
    home = os.lstat(root / "home/u")
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1000, 0o700)
    f = os.lstat(root / "home/u/f")
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1000, 1001, 0o640)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.lstat(root / "bin/su2").st_ino == su.st_ino
    null = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.lstat(root / "bin/su").st_mtime == 1_700_000_000


# ------------------------------------------------------------------------ sharing and GC


def test_shared_layer_is_unpacked_once_and_collected_when_unused(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    base = layer_tar(BASE)
    one = layer_tar([("one", "file", b"1", 0o644)])
    two = gzip.compress(layer_tar([("two", "file", b"2", 0o644)]))
    store.import_archive(docker_archive(tmp_path / "1.tar", [(["app:1"], [base, one], None)]))
    shared = store.resolve("app:1").layer_dirs[0]
    inode = os.stat(shared / "keep/x").st_ino
    store.import_archive(docker_archive(tmp_path / "2.tar", [(["app:2"], [base, two], None)]))
    first, second = store.resolve("app:1"), store.resolve("app:2")
    assert first.layer_dirs[0] == second.layer_dirs[0] == shared
    assert os.stat(shared / "keep/x").st_ino == inode  # not unpacked again
    assert len(list(store.layers.iterdir())) == 3
    assert {i.repo_tags for i in store.list()} == {("app:1",), ("app:2",)}

    assert store.remove("app:1") == ["Untagged: app:1", f"Deleted: {first.id}"]
    assert store.resolve("app:1") is None
    assert sorted(d.name for d in store.layers.iterdir()) == sorted(
        d[7:] for d in second.diff_ids)
    assert shared.is_dir() and not first.layer_dirs[1].exists()
    assert (shared / "keep/x").read_text() == "keep\n"

    assert store.remove(second.id) == ["Untagged: app:2", f"Deleted: {second.id}"]
    _nothing_left(store)
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []


def test_rm_of_one_of_two_tags_only_untags(store: ImageStore, tmp_path: Path) -> None:
    image = build_busybox(store, tmp_path)
    store.tag("busybox", "localhost:5000/bb:v1")
    assert set(store.resolve("busybox").repo_tags) == {"busybox:latest",
                                                        "localhost:5000/bb:v1"}
    with pytest.raises(ImageError, match="must be forced"):
        store.remove(image.id)
    assert store.remove("busybox") == ["Untagged: busybox:latest"]
    assert store.resolve("localhost:5000/bb:v1").id == image.id
    assert image.layer_dirs[0].is_dir()
    with pytest.raises(ImageError, match="No such image"):
        store.remove("busybox")


@needs_root
def test_rm_refuses_an_image_whose_layers_a_container_mounts(store: ImageStore,
                                                             tmp_path: Path) -> None:
    image = build_busybox(store, tmp_path)
    dirs = {k: tmp_path / k for k in ("upper", "work", "rootfs")}
    for d in dirs.values():
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={image.layer_dirs[0]},upperdir={dirs['upper']},"
                    f"workdir={dirs['work']}", str(dirs["rootfs"])], check=True)
    try:
        with pytest.raises(ImageInUse, match="running container"):
            store.remove("busybox")
        assert store.resolve("busybox") is not None
        store.remove("busybox", force=True)  # untagged; the mounted layer stays until unused
        assert store.resolve("busybox") is None
        assert (dirs["rootfs"] / "bin/busybox").exists()
    finally:
        subprocess.run(["umount", str(dirs["rootfs"])], check=True)
    build_busybox(store, tmp_path)
    store.remove("busybox")
    _nothing_left(store)


def test_busybox_export_loads_into_another_store(store: ImageStore, tmp_path: Path) -> None:
    image = build_busybox(store, tmp_path)
    assert build_busybox(store, tmp_path).id == image.id  # reproducible
    archive = tmp_path / "busybox.tar"
    store.export_docker_archive("busybox", archive)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    other = ImageStore(tmp_path / "other")
    [loaded] = other.import_archive(archive)
    assert loaded.id == image.id and loaded.repo_tags == ("busybox:latest",)
    assert loaded.config["config"]["Cmd"] == ["sh"]
    root = loaded.layer_dirs[0]
    assert os.readlink(root / "bin/ls") == "busybox"
    assert "nobody:x:65534" in (root / "etc/passwd").read_text()
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    out = subprocess.run([str(root / "bin/busybox"), "echo", "hi"], capture_output=True,
                         text=True, check=True).stdout
    assert out == "hi\n"


def test_archive_that_is_neither_format_is_refused(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="neither"):
        store.import_archive(write_tar(tmp_path / "x.tar", {"hello": b"world"}))
    (tmp_path / "junk").write_bytes(b"not a tar at all")
    with pytest.raises(ImageError, match="cannot read"):
        store.import_archive(tmp_path / "junk")


@needs_root
def test_overlay_upper_dir_becomes_a_layer(store: ImageStore, tmp_path: Path) -> None:
    """What the python:3.11 build does: changes made through an overlay mount are packed
    from its upper directory (whiteouts and opaque dirs converted), and the result stacks."""
    base = layer_tar(BASE)
    [image] = store.import_archive(docker_archive(tmp_path / "b.tar", [(["b:1"], [base],
                                                                        None)]))
    lower = image.layer_dirs[0]
    dirs = {k: tmp_path / k for k in ("upper", "work", "root")}
    for d in dirs.values():
        d.mkdir()
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount -t overlay overlay -o lowerdir={lower},upperdir={dirs['upper']},"
         f"workdir={dirs['work']} {dirs['root']}; cd {dirs['root']}; "
         "rm etc/a; rm -r opaq; mkdir opaq; echo fresh > opaq/f; mkdir newdir; "
         f"echo n > newdir/n; {sys.executable} -c "
         "\"import os; os.setxattr('etc/b', 'user.note', b'hello')\""],
        check=True)
    out = tmp_path / "diff.tar.gz"
    write_layer(dirs["upper"], out, overlay_upper=True, lower=lower)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        note = tar.getmember("etc/b").pax_headers.get("SCHILY.xattr.user.note")
    assert "etc/.wh.a" in names and "opaq/.wh..wh..opq" in names
    assert "newdir/n" in names and "newdir/.wh..wh..opq" not in names  # nothing to hide
    assert note == "hello"
    top = out.read_bytes()
    [stacked] = store.import_archive(docker_archive(
        tmp_path / "s.tar", [(["s:1"], [base, top], None)]))
    assert os.getxattr(stacked.layer_dirs[1] / "etc/b", "user.note") == b"hello"
    view = tmp_path / "view"
    view.mkdir()
    listing = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t overlay overlay -o lowerdir={stacked.layer_dirs[1]}:{lower} {view} && "
         f"cd {view} && find . | sort"],
        capture_output=True, text=True, check=True).stdout.split()
    assert listing == [".", "./etc", "./etc/b", "./keep", "./keep/x", "./newdir",
                       "./newdir/n", "./opaq", "./opaq/f"]


def test_truncated_archive_is_refused(store: ImageStore, tmp_path: Path) -> None:
    whole = docker_archive(tmp_path / "a.tar", [(["a:1"], [layer_tar(BASE)], None)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(ImageError, match="cannot read"):
        store.import_archive(cut)
    _nothing_left(store)
