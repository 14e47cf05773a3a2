"""The local image store: an OCI image layout on disk, each layer unpacked once for overlayfs.

There is no registry here, so images arrive by `import_archive` (`docker save` and OCI
archives) or are built locally (runtime/imagebuild.py through `add_image`). Layout of `root`
(a cluster uses DATA_DIR/images):

    oci-layout, index.json       the OCI layout; one index entry per tag, the normalized
                                 reference in `org.opencontainers.image.ref.name`
    blobs/sha256/<hex>           manifests, configs and layer tars, digests verified
    layers/<diff-id hex>/        a layer unpacked once and shared by every image that has it,
                                 whiteouts in overlayfs form so it serves as a lowerdir
    layerinfo/<diff-id hex>.json the unpacked size of a layer
    tmp/                         staging, only ever written by the holder of `lock`

Writers (import, add, tag, remove) serialize on an flock of `lock`, so a node agent and
`dockyard image` commands share one store. Readers never lock: index.json is replaced by
rename, and a layer directory appears by rename only once it is complete, so a crash
mid-import leaves nothing half-made (only tmp/ debris, cleared by the next writer).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.runtime.imagearchive import (
    REF_NAME,
    Candidate,
    DigestMismatch,
    ImageError,
    docker_candidates,
    extract_archive,
    oci_candidates,
    write_docker_archive,
)
from dockyard.runtime.imagearchive import hex_of as _hex
from dockyard.runtime.imagearchive import sha256_of as _sha256
from dockyard.runtime.imagelayers import UnsafeLayer, scan_layer
from dockyard.runtime.imageref import (
    HEX_ID_RE,
    InvalidReference,
    Reference,
    familiar,
    normalize,
    parse_reference,
    parse_reference_or_none,
)

__all__ = ["DigestMismatch", "Image", "ImageError", "ImageInUse", "ImageNotFound",
           "ImageStore", "InvalidReference", "Reference", "familiar", "normalize",
           "parse_reference"]

Obj = dict[str, Any]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class ImageNotFound(ImageError):
    """No image by that reference in the store."""


class ImageInUse(ImageError):
    """A running container's root filesystem is made of the image's layers."""


# -------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """One image of the store, as the agent and the CLI see it."""

    id: str  # "sha256:<config digest>", Docker's image ID
    manifest_digest: str
    names: tuple[str, ...]  # normalized tags, e.g. docker.io/library/busybox:latest
    repo_tags: tuple[str, ...]  # familiar: busybox:latest
    repo_digests: tuple[str, ...]  # familiar: busybox@sha256:<manifest digest>
    config: Obj = field(compare=False, repr=False)  # the whole OCI image config
    diff_ids: tuple[str, ...] = ()
    layer_dirs: tuple[Path, ...] = ()  # unpacked layers, lowest first
    size: int = 0  # unpacked bytes, as `docker images` shows
    created: str = ""  # RFC 3339, from the config

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class _Entry:
    """One descriptor of index.json: a manifest, tagged with `name` or untagged."""

    digest: str
    size: int
    media_type: str
    name: str | None

    def descriptor(self) -> Obj:
        d: Obj = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.name:
            d["annotations"] = {REF_NAME: self.name}
        return d


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _mountinfo_text() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def _mount_escape(path: Path) -> str:
    s = str(path)
    for ch, esc in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        s = s.replace(ch, esc)
    return s


class ImageStore:
    """Content-addressed images under `root`; safe to share between processes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.layerinfo = self.root / "layerinfo"
        self.tmp = self.root / "tmp"
        self._index_cache: tuple[tuple[int, int, int], list[_Entry]] | None = None
        self._json_cache: dict[str, Obj] = {}
        self._size_cache: dict[str, int] = {}
        for d in (self.blobs, self.layers, self.layerinfo, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").exists():
            _write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    # ------------------------------------------------------------------------------ reading

    def _entries(self) -> list[_Entry]:
        path = self.root / "index.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._index_cache and self._index_cache[0] == key:
            return self._index_cache[1]
        index = json.loads(path.read_bytes())
        entries = [_Entry(d["digest"], d.get("size", 0), d.get("mediaType", OCI_MANIFEST),
                          (d.get("annotations") or {}).get(REF_NAME))
                   for d in index.get("manifests", [])]
        self._index_cache = (key, entries)
        return entries

    def _blob_json(self, digest: str) -> Obj:
        cached = self._json_cache.get(digest)
        if cached is None:
            cached = json.loads((self.blobs / _hex(digest)).read_bytes())
            self._json_cache[digest] = cached
        return cached

    def _layer_size(self, hexid: str) -> int:
        size = self._size_cache.get(hexid)
        if size is None:
            try:
                size = int(json.loads((self.layerinfo / f"{hexid}.json").read_text())["size"])
            except (OSError, ValueError, KeyError):
                return 0
            self._size_cache[hexid] = size
        return size

    def _image(self, manifest_digest: str, entries: list[_Entry]) -> Image:
        manifest = self._blob_json(manifest_digest)
        config_digest = manifest["config"]["digest"]
        config = self._blob_json(config_digest)
        diff_ids = tuple(config.get("rootfs", {}).get("diff_ids", []))
        names = tuple(sorted(e.name for e in entries if e.digest == manifest_digest and e.name))
        refs = [parse_reference(n) for n in names]
        repos = dict.fromkeys(r.familiar_repository for r in refs)
        return Image(
            id=config_digest, manifest_digest=manifest_digest, names=names,
            repo_tags=tuple(r.familiar() for r in refs),
            repo_digests=tuple(f"{repo}@{manifest_digest}" for repo in repos),
            config=config, diff_ids=diff_ids,
            layer_dirs=tuple(self.layers / _hex(d) for d in diff_ids),
            size=sum(self._layer_size(_hex(d)) for d in diff_ids),
            created=config.get("created", ""))

    def list(self) -> list[Image]:
        """Every image (one per manifest), newest first."""
        for attempt in range(3):
            entries = self._entries()
            try:
                images = [self._image(d, entries)
                          for d in dict.fromkeys(e.digest for e in entries)]
                return sorted(images, key=lambda i: (i.created, i.id), reverse=True)
            except FileNotFoundError:  # removed by a writer after we read the index
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def resolve(self, ref: str) -> Image | None:
        """The image a reference names (tag, name@digest, image ID or a unique ID prefix),
        or None. Raises InvalidReference for a malformed name."""
        for attempt in range(3):
            try:
                return self._resolve(ref, self._entries())
            except FileNotFoundError:  # removed by a writer after we read the index
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, ref: str, entries: list[_Entry]) -> Image | None:
        hexmatch = HEX_ID_RE.fullmatch(ref)
        if ref.startswith("sha256:"):
            if not hexmatch:
                raise InvalidReference(ref)
            return self._by_id(hexmatch.group(1), entries)
        try:
            parsed = parse_reference(ref)
        except InvalidReference:
            if hexmatch:
                return self._by_id(hexmatch.group(1), entries)
            raise
        for e in entries:
            if _names_match(e, parsed):
                return self._image(e.digest, entries)
        return self._by_id(hexmatch.group(1), entries) if hexmatch else None

    def _by_id(self, prefix: str, entries: list[_Entry]) -> Image | None:
        found: dict[str, str] = {}  # config digest -> manifest digest
        for digest in dict.fromkeys(e.digest for e in entries):
            config_digest = self._blob_json(digest)["config"]["digest"]
            if config_digest.removeprefix("sha256:").startswith(prefix):
                found.setdefault(config_digest, digest)
        if len(found) > 1:
            raise ImageError(f"image ID prefix {prefix!r} is ambiguous: give more digits")
        return self._image(next(iter(found.values())), entries) if found else None

    def get(self, ref: str) -> Image:
        image = self.resolve(ref)
        if image is None:
            raise ImageNotFound(f"No such image: {ref}")
        return image

    def inspect(self, ref: str) -> Obj:
        """Docker's `image inspect` view of an image."""
        image = self.get(ref)
        cfg = dict(image.config.get("config") or {})
        for key in ("Env", "Cmd", "Entrypoint", "ExposedPorts", "Labels", "Volumes"):
            cfg.setdefault(key, None)
        for key in ("WorkingDir", "User", "StopSignal"):
            cfg.setdefault(key, "")
        return {
            "Id": image.id, "RepoTags": list(image.repo_tags),
            "RepoDigests": list(image.repo_digests), "Parent": "",
            "Comment": image.config.get("comment", ""), "Created": image.created,
            "Author": image.config.get("author", ""), "Config": cfg,
            "Architecture": image.config.get("architecture", ""),
            "Variant": image.config.get("variant", ""), "Os": image.config.get("os", ""),
            "Size": image.size,
            "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
            "Metadata": {"ManifestDigest": image.manifest_digest,
                         "LayerDirs": [str(d) for d in image.layer_dirs]},
        }

    # ------------------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for debris in self.tmp.iterdir():  # left by a writer that crashed
                _remove_path(debris)
            yield
        finally:
            os.close(fd)

    def _write_index(self, entries: list[_Entry]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [e.descriptor() for e in entries]}
        _write_atomic(self.root / "index.json", json.dumps(index, indent=2).encode() + b"\n")

    def _put_blob(self, data: bytes) -> str:
        digest = _sha256(data)
        path = self.blobs / _hex(digest)
        if not path.exists():
            _write_atomic(path, data)
        return digest

    def _set_names(self, entries: list[_Entry], manifest: bytes, media_type: str,
                   names: Sequence[str]) -> list[_Entry]:
        """Point `names` at the manifest (moving them off other images); an image given no
        name keeps (or gets) one untagged entry."""
        digest = _sha256(manifest)
        out = [e for e in entries if e.name is None or e.name not in names]
        if names:
            out = [e for e in out if not (e.digest == digest and e.name is None)]
            out += [_Entry(digest, len(manifest), media_type, n) for n in names]
        elif not any(e.digest == digest for e in out):
            out.append(_Entry(digest, len(manifest), media_type, None))
        return out

    def add_image(self, layers: Sequence[Path], config: Obj, tags: Sequence[str] = ()) -> Image:
        """Store an image built locally: layer tars (gzip or plain, lowest first) and its
        config, whose rootfs.diff_ids are filled in here. Returns the stored image."""
        names = [normalize(t) for t in tags]
        with self._locked():
            results = [self._commit_layer(Path(p), None, None, move=False) for p in layers]
            config = {**config, "rootfs": {"type": "layers",
                                           "diff_ids": [d for _, d in results]}}
            raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
            manifest = self._finish(raw, [desc for desc, _ in results], names, None)
            return self._image(_sha256(manifest), self._entries())

    def import_archive(self, path: Path | str) -> list[Image]:
        """Load a `docker save` archive or an OCI archive (tar, optionally compressed);
        every blob digest and layer diff_id is verified. Returns the loaded images."""
        path = Path(path)
        with self._locked():
            stage = Path(tempfile.mkdtemp(prefix="import-", dir=self.tmp))
            try:
                extract_archive(path, stage)
                if (stage / "index.json").exists() and (stage / "oci-layout").exists():
                    candidates = oci_candidates(stage)
                elif (stage / "manifest.json").exists():
                    candidates = docker_candidates(stage)
                else:
                    raise ImageError(f"{path} is neither a `docker save` archive "
                                     "(manifest.json) nor an OCI archive (oci-layout, "
                                     "index.json)")
                digests = [_sha256(self._commit(c)) for c in candidates]
            finally:
                _remove_path(stage)
            entries = self._entries()
            return [self._image(d, entries) for d in dict.fromkeys(digests)]

    def commit(self, candidate: Candidate) -> bytes:
        """Add an image from verified blobs (a registry pull), as an archive import does:
        layers unpacked once, diff_ids verified, the index written last. Its manifest."""
        with self._locked():
            return self._commit(candidate)

    def _commit(self, c: Candidate) -> bytes:
        """Verify an imported image, move its blobs in, unpack missing layers, then tag it."""
        config = json.loads(c.config)
        diff_ids = list(config.get("rootfs", {}).get("diff_ids") or [])
        if len(diff_ids) != len(c.layers):
            raise ImageError(f"image config lists {len(diff_ids)} layers but the manifest "
                             f"has {len(c.layers)}")
        descriptors = []
        for i, (blob, diff_id) in enumerate(zip(c.layers, diff_ids, strict=True)):
            expected = c.layer_digests[i] if i < len(c.layer_digests) else None
            descriptors.append(self._commit_layer(blob, diff_id, expected, move=True)[0])
        return self._finish(c.config, descriptors, c.names, c.manifest)

    def _finish(self, config: bytes, descriptors: list[Obj], names: list[str],
                manifest: bytes | None) -> bytes:
        """Write config and manifest blobs, then the index: until then the image does not
        exist."""
        config_digest = self._put_blob(config)
        manifest = manifest or json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors}, separators=(",", ":")).encode()
        self._put_blob(manifest)
        media_type = json.loads(manifest).get("mediaType") or OCI_MANIFEST
        entries = self._set_names(self._entries(), manifest, media_type, names)
        self._write_index(entries)
        self._gc(entries)
        return manifest

    def _commit_layer(self, blob: Path, diff_id: str | None, expected_digest: str | None,
                      move: bool) -> tuple[Obj, str]:
        """Verify one layer blob, unpack it unless its directory exists, store the blob.
        Returns its manifest descriptor and diff_id."""
        known = diff_id is not None and (self.layers / _hex(diff_id)).is_dir()
        work = None if known else Path(tempfile.mkdtemp(prefix="unpack-", dir=self.tmp))
        try:
            scan = scan_layer(blob, work)
            if expected_digest and scan.digest != expected_digest:
                raise DigestMismatch(f"layer blob digest mismatch: expected {expected_digest},"
                                     f" got {scan.digest}")
            if diff_id is not None and scan.diff_id != diff_id:
                raise DigestMismatch(f"layer diff_id mismatch: the config says {diff_id}, the "
                                     f"layer's content is {scan.diff_id}")
        except BaseException as e:
            if work is not None:
                _remove_path(work)
            if isinstance(e, UnsafeLayer):
                raise ImageError(f"refusing layer {diff_id or blob.name}: {e}") from None
            raise
        hexid = _hex(scan.diff_id)
        if work is not None:
            if (self.layers / hexid).is_dir():
                _remove_path(work)
            else:
                _write_atomic(self.layerinfo / f"{hexid}.json",
                              json.dumps({"size": scan.size, "diff_id": scan.diff_id}).encode())
                os.rename(work, self.layers / hexid)
        target = self.blobs / _hex(scan.digest)
        if not target.exists():
            staged = self.tmp / f"blob-{_hex(scan.digest)}"
            if move:
                os.link(blob, staged)  # the staged file may serve another image too
            else:
                shutil.copyfile(blob, staged)
            os.replace(staged, target)
        return ({"mediaType": OCI_LAYER + ("+gzip" if scan.compressed else ""),
                 "digest": scan.digest, "size": target.stat().st_size}, scan.diff_id)

    def ensure_unpacked(self, image: Image) -> Image:
        """Unpack again any layer directory that went missing (from its blob)."""
        if all(d.is_dir() for d in image.layer_dirs):
            return image
        with self._locked():
            manifest = self._blob_json(image.manifest_digest)
            for desc, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
                if not (self.layers / _hex(diff_id)).is_dir():
                    self._commit_layer(self.blobs / _hex(desc["digest"]), diff_id,
                                       desc["digest"], move=False)
        return image

    def tag(self, source: str, target: str) -> Image:
        """Give an image another name (`docker tag`)."""
        name = normalize(target)
        with self._locked():
            image = self.get(source)
            manifest = (self.blobs / _hex(image.manifest_digest)).read_bytes()
            media_type = json.loads(manifest).get("mediaType") or OCI_MANIFEST
            entries = self._set_names(self._entries(), manifest, media_type, [name])
            self._write_index(entries)
            self._gc(entries)
            return self._image(image.manifest_digest, entries)

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """`docker rmi`: a name is untagged, an ID deletes the image (with several names only
        if forced); an image left without a name is deleted, and the blobs and layer
        directories no image uses any more go with it. Returns Docker's output lines."""
        with self._locked():
            entries = self._entries()
            image = self.get(ref)
            parsed = None if ref.startswith("sha256:") else parse_reference_or_none(ref)
            named = [e for e in entries if parsed and _names_match(e, parsed)]
            if named and parsed:
                doomed = named
                lines = [f"Untagged: {parsed.familiar() if parsed.digest else familiar(e.name)}"
                         for e in named[:1 if parsed.digest else None] if e.name]
            else:
                if len(image.names) > 1 and not force:
                    raise ImageError(f"conflict: unable to delete {image.short_id} (must be "
                                     "forced) - image is referenced in multiple repositories")
                doomed = [e for e in entries
                          if self._blob_json(e.digest)["config"]["digest"] == image.id]
                lines = [f"Untagged: {familiar(e.name)}" for e in doomed if e.name]
            remaining = [e for e in entries if e not in doomed]
            deleted = [d for d in dict.fromkeys(e.digest for e in doomed)
                       if not any(e.digest == d for e in remaining)]
            if deleted and not force:
                busy = self._mounted(set(self._layers_only_of(deleted, remaining)))
                if busy:
                    raise ImageInUse(f"conflict: unable to remove image {ref} ({image.short_id})"
                                     f": a running container uses it (its layer {busy[0]} is "
                                     "mounted); stop the container first or force the removal")
            ids = dict.fromkeys(self._blob_json(d)["config"]["digest"] for d in deleted)
            self._write_index(remaining)
            self._gc(remaining)
            return lines + [f"Deleted: {i}" for i in ids]

    def _layers_only_of(self, manifests: list[str], remaining: list[_Entry]) -> list[Path]:
        live = {d for e in remaining for d in self._diff_ids(e.digest)}
        return [self.layers / _hex(d) for m in manifests for d in self._diff_ids(m)
                if d not in live]

    def _diff_ids(self, manifest_digest: str) -> list[str]:
        config = self._blob_json(self._blob_json(manifest_digest)["config"]["digest"])
        return list(config.get("rootfs", {}).get("diff_ids") or [])

    def _mounted(self, dirs: set[Path]) -> list[Path]:
        """Layer directories some overlay mount on this host uses (a running container)."""
        if not dirs:
            return []
        text = _mountinfo_text()
        return [d for d in sorted(dirs) if _mount_escape(d) in text]

    def _gc(self, entries: list[_Entry]) -> None:
        """Delete blobs and layer directories no image of `entries` references; a layer
        directory still mounted by a container is kept for a later collection."""
        live_blobs, live_layers = set(), set()
        for e in entries:
            manifest = self._blob_json(e.digest)
            live_blobs.add(_hex(e.digest))
            live_blobs.add(_hex(manifest["config"]["digest"]))
            live_blobs.update(_hex(layer["digest"]) for layer in manifest.get("layers", []))
            live_layers.update(_hex(d) for d in self._diff_ids(e.digest))
        for blob in self.blobs.iterdir():
            if blob.name not in live_blobs:
                blob.unlink(missing_ok=True)
                self._json_cache.pop(f"sha256:{blob.name}", None)
        dead = {d for d in self.layers.iterdir() if d.name not in live_layers}
        for layer in dead - set(self._mounted(dead)):
            trash = self.tmp / f"gc-{layer.name}"
            os.rename(layer, trash)  # gone at once; the slow delete follows
            (self.layerinfo / f"{layer.name}.json").unlink(missing_ok=True)
            _remove_path(trash)

    # ------------------------------------------------------------------------------- export

    def export_docker_archive(self, ref: str, path: Path | str) -> None:
        """Write a `docker save` archive of the image that `docker load` accepts."""
        write_docker_archive(self, self.get(ref), Path(path))


def _names_match(entry: _Entry, ref: Reference) -> bool:
    if not entry.name:
        return False
    if ref.digest:
        return (entry.digest == ref.digest
                and parse_reference(entry.name).repository == ref.repository)
    return entry.name == str(ref)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


