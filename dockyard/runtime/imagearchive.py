"""Image archives: `docker save` tars and OCI image layouts packed as tars.

Reading stages an archive's files and returns `Candidate`s, each an image whose blobs are
verified against their digests (the store verifies the layers as it unpacks them). Writing
produces a `docker save` archive that `docker load` accepts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.runtime.imageref import normalize

if TYPE_CHECKING:
    from dockyard.runtime.images import Image, ImageStore

Obj = dict[str, Any]

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


class ImageError(Exception):
    """An image operation failed; the message says what to do."""


class DigestMismatch(ImageError):
    """Content does not match the digest that names it."""


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
        raise ImageError(f"unsupported digest {digest!r} (only sha256 is supported)")
    return hexpart


def host_arch() -> str:
    """The machine's architecture as OCI names it (amd64, arm64)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine)


@dataclass
class Candidate:
    """An image read from an archive, to be committed by the store."""

    config: bytes
    layers: list[Path]  # layer blobs in the staging area, lowest first
    names: list[str]  # normalized references
    manifest: bytes | None = None  # None: the store writes one from config and layers
    layer_digests: list[str | None] = field(default_factory=list)  # expected, when known


def extract_archive(path: Path, stage: Path) -> None:
    """Unpack an image archive into the staging directory: files and directories only;
    symbolic links (old `docker save` shares layers with them) must stay inside."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                _extract_member(path, tar, m, stage)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise ImageError(f"cannot read {path}: {e}") from None


def _extract_member(path: Path, tar: tarfile.TarFile, m: tarfile.TarInfo, stage: Path) -> None:
    parts = [p for p in m.name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"refusing {path}: member {m.name!r} leaves the archive")
    if not parts:
        return
    target = stage.joinpath(*parts)
    if not _inside(stage, target.parent):
        raise ImageError(f"refusing {path}: member {m.name!r} leaves the archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    if m.isdir():
        target.mkdir(exist_ok=True)
    elif m.isreg():
        src = tar.extractfile(m)
        with open(target, "wb") as out:
            if src is not None:
                shutil.copyfileobj(src, out, 1 << 20)
    elif m.issym() or m.islnk():
        base = stage if m.islnk() else target.parent
        if m.linkname.startswith("/") or not _inside(stage, base / m.linkname):
            raise ImageError(f"refusing {path}: link {m.name!r} -> {m.linkname!r} leaves "
                             "the archive")
        if m.issym():
            target.symlink_to(m.linkname)
        else:
            os.link(stage / m.linkname, target)


def _inside(root: Path, path: Path) -> bool:
    real = os.path.realpath(path)
    top = os.path.realpath(root)
    return real == top or real.startswith(top + os.sep)


def _staged(stage: Path, name: str) -> Path:
    path = stage / name
    if not _inside(stage, path) or not path.is_file():
        raise ImageError(f"the archive lacks {name!r} (or it leaves the archive)")
    return Path(os.path.realpath(path))


def _blob(stage: Path, digest: str, size: int | None = None) -> Path:
    path = _staged(stage, f"blobs/sha256/{hex_of(digest)}")
    if size is not None and path.stat().st_size != size:
        raise DigestMismatch(f"blob {digest}: size {path.stat().st_size}, expected {size}")
    return path


def _verified_bytes(stage: Path, digest: str, size: int | None = None) -> bytes:
    path = _blob(stage, digest, size)
    data = path.read_bytes()
    if sha256_of(data) != digest:
        raise DigestMismatch(f"blob {digest} does not match its digest ({sha256_of(data)})")
    return data


def oci_candidates(stage: Path) -> list[Candidate]:
    index = json.loads(_staged(stage, "index.json").read_bytes())
    out = []
    for desc in index.get("manifests", []):
        annotations = desc.get("annotations") or {}
        # ref.name is "a fully qualified reference or just a tag" (OCI): a bare tag names no
        # repository, so such an image is loaded untagged (`dockyard image tag` names it).
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
        names = [normalize(name)] if name and any(c in name for c in ":/@") else []
        manifest_desc = _platform_manifest(stage, desc)
        manifest = _verified_bytes(stage, manifest_desc["digest"], manifest_desc.get("size"))
        m = json.loads(manifest)
        config = _verified_bytes(stage, m["config"]["digest"], m["config"].get("size"))
        layers, digests = [], []
        for layer in m.get("layers", []):
            if "zstd" in layer.get("mediaType", ""):
                raise ImageError("zstd-compressed layers are not supported; export the image "
                                 "with gzip or uncompressed layers")
            layers.append(_blob(stage, layer["digest"], layer.get("size")))
            digests.append(layer["digest"])
        out.append(Candidate(config, layers, names, manifest, digests))
    if not out:
        raise ImageError("the OCI archive's index.json lists no image")
    return out


def _platform_manifest(stage: Path, desc: Obj) -> Obj:
    """A manifest descriptor; an index (multi-platform image) is resolved to this host's."""
    for _ in range(4):
        if desc.get("mediaType") not in INDEX_TYPES:
            return desc
        index = json.loads(_verified_bytes(stage, desc["digest"], desc.get("size")))
        matches = [d for d in index.get("manifests", [])
                   if (d.get("platform") or {}).get("os", "linux") == "linux"
                   and (d.get("platform") or {}).get("architecture", host_arch()) == host_arch()]
        if not matches:
            raise ImageError(f"the archive has no image for linux/{host_arch()}")
        desc = matches[0]
    raise ImageError("image indexes nested too deep")


def docker_candidates(stage: Path) -> list[Candidate]:
    out = []
    for item in json.loads(_staged(stage, "manifest.json").read_bytes()):
        config_name = item["Config"]
        config = _staged(stage, config_name).read_bytes()
        named_hex = re.search(r"[0-9a-f]{64}", config_name)
        if named_hex and sha256_of(config) != f"sha256:{named_hex.group(0)}":
            raise DigestMismatch(f"config {config_name} does not match its digest "
                                 f"({sha256_of(config)})")
        layers = [_staged(stage, name) for name in item.get("Layers", [])]
        digests = [f"sha256:{h.group(0)}" if (h := re.fullmatch(r"blobs/sha256/([0-9a-f]{64})",
                                                                name)) else None
                   for name in item.get("Layers", [])]
        names = [normalize(t) for t in item.get("RepoTags") or []]
        out.append(Candidate(config, layers, names, None, digests))
    if not out:
        raise ImageError("the archive's manifest.json lists no image")
    return out


def write_docker_archive(store: ImageStore, image: Image, path: Path) -> None:
    """A `docker save` archive of one image (uncompressed layer tars, as Docker writes
    them), written to a temporary name and renamed."""
    manifest = json.loads((store.blobs / hex_of(image.manifest_digest)).read_bytes())
    tmp = path.with_name(f".{path.name}.tmp")
    config_name = f"{hex_of(image.id)}.json"
    layer_names = []
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(store.blobs / hex_of(manifest["config"]["digest"]), arcname=config_name)
        for desc, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
            name = f"{hex_of(diff_id)}/layer.tar"
            blob = store.blobs / hex_of(desc["digest"])
            with open(blob, "rb") as f:
                compressed = f.read(2) == b"\x1f\x8b"
            if compressed:
                with tempfile.TemporaryFile(dir=store.tmp) as plain:
                    with gzip.open(blob, "rb") as src:
                        shutil.copyfileobj(src, plain, 1 << 20)
                    info = tarfile.TarInfo(name)
                    info.size = plain.tell()
                    plain.seek(0)
                    tar.addfile(info, plain)
            else:
                tar.add(blob, arcname=name)
            layer_names.append(name)
        data = json.dumps([{"Config": config_name, "RepoTags": list(image.repo_tags),
                            "Layers": layer_names}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
