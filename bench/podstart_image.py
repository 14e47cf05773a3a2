"""The one busybox image every part of the pod-start benchmark runs.

Preferred: the image dockyard itself builds (runtime/imagebuild.py into the cluster's image
store), so runc gets the very layer directory the pods use and docker loads the archive the
store exports. Until that API exists, the same image is built here from /bin/busybox
(busybox-static): one layer, the binary and its applet links, exported as a `docker save`
archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
REF = "busybox:latest"


@dataclass
class BenchImage:
    layer_dirs: list[Path]  # unpacked layers, lowest first
    archive: Path  # a `docker save` archive tagged busybox:latest
    source: str  # where it came from, printed with the results


def _rootfs(root: Path) -> None:
    for sub in ("bin", "etc", "dev", "proc", "sys", "tmp", "root", "var"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    os.chmod(root / "bin" / "busybox", 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in applets:
        link = root / "bin" / name
        if name != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def _docker_archive(layer: Path, archive: Path) -> None:
    """A `docker save` archive (manifest.json, config, one layer.tar) of one directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(layer.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layer)), recursive=False)
    layer_tar = buf.getvalue()
    diff_id = hashlib.sha256(layer_tar).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "dockyard bench: /bin/busybox from busybox-static"}],
    }).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [REF],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(archive, "w") as out:
        for name, data in ((f"{diff_id}/layer.tar", layer_tar), (f"{config_id}.json", config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _build_with_dockyard(store: object) -> bool:
    """dockyard's own on-demand busybox build (runtime/imagebuild.py), as the agent does."""
    try:
        from dockyard.runtime.imagebuild import build  # noqa: PLC0415
    except ImportError:
        return False
    build(store, REF)  # type: ignore[arg-type]
    return True


def _from_store(data_dir: Path, work: Path) -> BenchImage | None:
    """busybox from dockyard's image store in the cluster's data directory (DATA_DIR/images),
    put there before the cluster starts so its agent finds it present: built by dockyard if it
    can, else the image built here, imported through the store like `dockyard image import`."""
    try:
        from dockyard.runtime.images import ImageStore  # noqa: PLC0415
    except ImportError:
        return None
    store = ImageStore(data_dir / "images")
    source = "dockyard's image store (already present)"
    if store.resolve(REF) is None:
        source = "dockyard's image store, built by runtime/imagebuild.py"
        if not _build_with_dockyard(store) or store.resolve(REF) is None:
            layer = work / "busybox-layer"
            _rootfs(layer)
            _docker_archive(layer, work / "busybox-import.tar")
            store.import_archive(work / "busybox-import.tar")
            source = ("built by the benchmark from /bin/busybox, imported into dockyard's "
                      "image store")
    image = store.ensure_unpacked(store.get(REF))
    archive = work / "busybox-docker.tar"
    store.export_docker_archive(REF, archive)
    return BenchImage(list(image.layer_dirs), archive, source)


def prepare(data_dir: Path, work: Path, use_store: bool = True) -> BenchImage:
    """The image for this run: dockyard's own busybox if the store can provide it, else one
    built here the same way from busybox-static."""
    if use_store:
        image = _from_store(data_dir, work)
        if image is not None:
            return image
    layer = work / "busybox-layer"
    _rootfs(layer)
    archive = work / "busybox-docker.tar"
    _docker_archive(layer, archive)
    return BenchImage([layer], archive, "built by the benchmark from /bin/busybox")
