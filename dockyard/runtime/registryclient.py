"""A client of the cluster's image registry (the OCI distribution API, apiserver/registry.py).

Pull: resolve the reference to a manifest digest, fetch the config and the layers this store
lacks, verify every digest (and size) while streaming, then commit the image into the local
store through its import path (which verifies diff_ids while unpacking and writes the index
last), so a failed or interrupted pull leaves no image behind. Push: the reverse, skipping
blobs the registry has, then the manifest exactly as stored (its digest is the image's).

The cluster registry is the only registry there is (no internet here): every reference is
looked up there by its repository as Docker reads it (`busybox` is `docker.io/library/
busybox`), and a reference naming the cluster's own address (`10.0.0.1:6443/app:v1`) drops it.
Nothing ever contacts docker.io or any other host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from dockyard.runtime.imagearchive import Candidate, DigestMismatch, ImageError, host_arch
from dockyard.runtime.imageref import Reference, parse_reference, parse_reference_or_none
from dockyard.runtime.images import Image, ImageStore

if TYPE_CHECKING:
    from dockyard.client.rest import Client

log = logging.getLogger(__name__)

Obj = dict[str, Any]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
PARALLEL_BLOBS = 3
_CHUNK = 1 << 20


class RegistryError(Exception):
    """The registry refused or failed a request: `code` is the distribution error code
    (MANIFEST_UNKNOWN, UNAUTHORIZED, ...) or UNREACHABLE; `status` the HTTP status (0: none)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def unreachable(self) -> bool:
        return self.code == "UNREACHABLE"


@dataclass(frozen=True)
class RegistryConfig:
    """Where the cluster registry is and how to talk to it: the API server's URL, a bearer
    token and the cluster CA (an SSL context)."""

    url: str
    token: str = ""
    ssl: ssl.SSLContext | bool = True

    @property
    def host(self) -> str:
        """host:port, as an image reference naming this registry spells it."""
        return urlsplit(self.url).netloc

    @classmethod
    def from_client(cls, client: Client) -> RegistryConfig:
        """The registry of the API server `client` talks to, with the client's credentials."""
        return cls(client.base_url, client.token, client.ssl_context)

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> RegistryConfig:
        from dockyard.client.rest import Client

        return cls.from_client(Client.from_kubeconfig(path))

    def name_for(self, ref: Reference) -> str:
        """The repository name on this registry: `10.0.0.1:6443/app` -> `app`, `busybox` ->
        `busybox`, `ghcr.io/x/y` -> `ghcr.io/x/y`."""
        own = self.host + "/"
        if ref.repository.startswith(own):
            return ref.repository[len(own):]
        return ref.familiar_repository


def commit_image(store: ImageStore, candidate: Candidate) -> bytes:
    """Commit a verified manifest, config and layer blobs as one image of `store`, as an
    archive import does (layers unpacked once, diff_ids verified, index written last).
    Returns the manifest."""
    return store.commit(candidate)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hexpart(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef"
                                                          for c in hexpart):
        raise RegistryError("DIGEST_INVALID", f"unsupported digest {digest!r} (only sha256)")
    return hexpart


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RegistryClient:
    """One aiohttp session to the registry; close() it when done."""

    def __init__(self, config: RegistryConfig, *, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0) -> None:
        self.config = config
        self.url = config.url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                              sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to its event loop
            headers = {"User-Agent": "dockyard-registry-client"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self.config.ssl, limit=16))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- requests

    async def _request(self, method: str, url: str | URL, *, ok: tuple[int, ...],
                       headers: dict[str, str] | None = None, data: Any = None,
                       read: bool = True) -> tuple[int, Any, bytes]:
        """One request; a status outside `ok` becomes a RegistryError with the registry's
        message. Returns status, headers and (with `read`) the body."""
        if isinstance(url, str) and url.startswith("/"):
            url = self.url + url
        try:
            async with self._http().request(method, url, headers=headers,
                                            data=data) as response:
                body = await response.read() if read or response.status not in ok else b""
                if response.status not in ok:
                    raise self._error(method, response.status, body)
                return response.status, response.headers, body
        except aiohttp.ClientConnectorCertificateError as e:
            raise RegistryError("UNREACHABLE", f"the cluster registry at {self.url} does not "
                                f"verify against the cluster CA: {e.certificate_error}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RegistryError("UNREACHABLE", f"cannot reach the cluster registry at "
                                f"{self.url}: {e or type(e).__name__}") from None

    def _error(self, method: str, status: int, body: bytes) -> RegistryError:
        try:
            errors = json.loads(body).get("errors") or []
            first = errors[0]
            return RegistryError(str(first.get("code") or "UNKNOWN"),
                                 f"{first.get('code')}: {first.get('message')}", status)
        except (ValueError, AttributeError, IndexError, TypeError):
            text = body.decode(errors="replace").strip()[:200]
            code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND"}.get(status, "UNKNOWN")
            return RegistryError(code, f"HTTP {status} for {method}" + (f": {text}" if text
                                                                        else ""), status)

    # ------------------------------------------------------------------------------ reading

    async def ping(self) -> None:
        await self._request("GET", "/v2/", ok=(200,))

    async def resolve(self, ref: str) -> str:
        """The manifest digest a reference names now (HEAD, as Kubernetes' Always does)."""
        parsed = parse_reference(ref)
        if parsed.digest:
            return parsed.digest
        name = self.config.name_for(parsed)
        _, headers, _ = await self._request("HEAD", f"/v2/{name}/manifests/{parsed.tag}",
                                            ok=(200,), headers={"Accept": ACCEPT}, read=False)
        digest = headers.get("Docker-Content-Digest")
        if digest:
            return digest
        return (await self._manifest(name, str(parsed.tag)))[2]

    async def _manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """A manifest, its media type and digest, verified against the digest asked for (or
        the one the registry claims)."""
        _, headers, body = await self._request("GET", f"/v2/{name}/manifests/{reference}",
                                               ok=(200,), headers={"Accept": ACCEPT})
        digest = _sha256(body)
        claimed = reference if reference.startswith("sha256:") else \
            headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise DigestMismatch(f"manifest {name}@{claimed} does not match its digest "
                                 f"({digest})")
        try:
            media_type = json.loads(body).get("mediaType") or ""
        except (ValueError, AttributeError):
            raise ImageError(f"manifest of {name}:{reference} is not JSON") from None
        content_type = headers.get("Content-Type", "").partition(";")[0].strip()
        return body, media_type or content_type or OCI_MANIFEST, digest

    async def tags(self, name: str) -> list[str]:
        _, _, body = await self._request("GET", f"/v2/{name}/tags/list", ok=(200,))
        return list(json.loads(body).get("tags") or [])

    async def catalog(self) -> list[str]:
        _, _, body = await self._request("GET", "/v2/_catalog", ok=(200,))
        return list(json.loads(body).get("repositories") or [])

    async def blob_exists(self, name: str, digest: str) -> bool:
        status, _, _ = await self._request("HEAD", f"/v2/{name}/blobs/{digest}",
                                           ok=(200, 404), read=False)
        return status == 200

    async def _download(self, name: str, desc: Obj, dest: Path) -> None:
        """Stream one blob to `dest`, hashing as it arrives; wrong content is refused."""
        digest, size = str(desc["digest"]), desc.get("size")
        _hexpart(digest)
        h = hashlib.sha256()
        written = 0
        try:
            async with self._http().get(f"{self.url}/v2/{name}/blobs/{digest}") as response:
                if response.status != 200:
                    raise self._error("GET", response.status, await response.read())
                with open(dest, "wb") as f:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        h.update(chunk)
                        written += len(chunk)
                        if size is not None and written > size:
                            raise DigestMismatch(f"blob {digest} is larger than the {size} "
                                                 "bytes its descriptor says")
                        f.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RegistryError("UNREACHABLE", f"downloading blob {digest} from {self.url} "
                                f"failed: {e or type(e).__name__}") from None
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            raise DigestMismatch(f"blob {digest} does not match its digest ({actual})")
        if size is not None and written != size:
            raise DigestMismatch(f"blob {digest}: {written} bytes, its descriptor says {size}")

    # ------------------------------------------------------------------------------ pulling

    async def pull(self, store: ImageStore, ref: str) -> Image:
        """Pull `ref` into `store` (named as `ref` normalizes) and return the stored image.
        Raises RegistryError (the registry refused or is unreachable) or ImageError (content
        that does not match its digests, or a malformed image)."""
        parsed = parse_reference(ref)
        name = self.config.name_for(parsed)
        manifest, media_type, digest = await self._manifest(name, parsed.digest or
                                                            str(parsed.tag))
        if media_type in INDEX_TYPES:
            manifest, media_type, digest = await self._manifest(
                name, _platform_digest(manifest, f"{name}@{digest}"))
        if media_type not in MANIFEST_TYPES:
            raise ImageError(f"{ref}: unsupported manifest type {media_type!r}")
        m = json.loads(manifest)
        config_desc, layers = m.get("config") or {}, list(m.get("layers") or [])
        work = _work_dir(store)
        try:
            config_path = work / "config"
            await self._download(name, config_desc, config_path)
            config = config_path.read_bytes()
            paths = await self._layers(store, name, layers, work)
            await asyncio.to_thread(commit_image, store, Candidate(
                config=config, layers=paths, names=[str(parsed)], manifest=manifest,
                layer_digests=[str(d["digest"]) for d in layers]))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        image = store.resolve(str(parsed))
        if image is None or image.manifest_digest != digest:
            raise ImageError(f"{ref} was replaced in the local store while it was pulled")
        return image

    async def _layers(self, store: ImageStore, name: str, layers: list[Obj],
                      work: Path) -> list[Path]:
        """Every layer blob on disk: the store's own when it has it, else downloaded."""
        limit = asyncio.Semaphore(PARALLEL_BLOBS)

        async def one(desc: Obj) -> Path:
            if "zstd" in str(desc.get("mediaType", "")):
                raise ImageError("zstd-compressed layers are not supported")
            hexpart = _hexpart(str(desc["digest"]))
            have = store.blobs / hexpart
            if have.is_file():
                return have  # the commit verifies it again
            dest = work / hexpart
            async with limit:
                if not dest.exists():  # a layer listed twice is fetched once
                    await self._download(name, desc, dest)
            return dest

        return list(await asyncio.gather(*(one(d) for d in layers)))

    # ------------------------------------------------------------------------------ pushing

    async def push(self, store: ImageStore, ref: str,
                   progress: Callable[[str, str], None] | None = None) -> tuple[str, str, int]:
        """Push the local image `ref` under the same name; returns the repository name on
        the registry, the manifest digest and its size. `progress(digest, what)` is told
        about each blob ("Pushed" or "Layer already exists")."""
        image = store.get(ref)
        parsed = parse_reference_or_none(ref)
        if parsed is None or (str(parsed) not in image.names
                              and parsed.digest != image.manifest_digest):
            raise ImageError(f"push needs the image's name, not its ID ({ref!r}): give it one "
                             "with `dockyard image tag`")
        name = self.config.name_for(parsed)
        manifest = (store.blobs / _hexpart(image.manifest_digest)).read_bytes()
        m = json.loads(manifest)
        for desc in [*m.get("layers", []), m["config"]]:
            digest = str(desc["digest"])
            if await self.blob_exists(name, digest):
                what = "Layer already exists"
            else:
                await self._upload(name, store.blobs / _hexpart(digest), digest)
                what = "Pushed"
            if progress is not None:
                progress(digest, what)
        media_type = m.get("mediaType") or OCI_MANIFEST
        reference = parsed.tag or image.manifest_digest
        _, headers, _ = await self._request(
            "PUT", f"/v2/{name}/manifests/{reference}", ok=(201,),
            headers={"Content-Type": media_type}, data=manifest)
        digest = headers.get("Docker-Content-Digest") or image.manifest_digest
        if digest != image.manifest_digest:
            raise DigestMismatch(f"the registry stored the manifest as {digest}, expected "
                                 f"{image.manifest_digest}")
        return name, digest, len(manifest)

    async def _upload(self, name: str, path: Path, digest: str) -> None:
        """A monolithic upload: POST for a session, PUT the whole blob with its digest."""
        _, headers, _ = await self._request("POST", f"/v2/{name}/blobs/uploads/", ok=(202,))
        location = headers.get("Location")
        if not location:
            raise RegistryError("BLOB_UPLOAD_INVALID", "the registry gave no upload location")
        url = URL(urljoin(self.url + "/", location)).update_query(digest=digest)
        size = path.stat().st_size
        with open(path, "rb") as f:
            await self._request("PUT", url, ok=(201,), data=f, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size)})


def _platform_digest(index: bytes, what: str) -> str:
    """The manifest of a multi-platform image for this machine."""
    for d in json.loads(index).get("manifests") or []:
        platform = d.get("platform") or {}
        if platform.get("os", "linux") == "linux" and \
                platform.get("architecture", host_arch()) == host_arch():
            return str(d["digest"])
    raise ImageError(f"{what} has no image for linux/{host_arch()}")


def _work_dir(store: ImageStore) -> Path:
    """A download directory beside the store's blobs (same filesystem: committing links the
    files in), not in the store's tmp/ which every writer clears. Directories left by a
    process that died are removed here."""
    pulls = store.root / "pulls"
    pulls.mkdir(exist_ok=True)
    for stale in pulls.iterdir():
        pid = stale.name.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    work = pulls / f"{os.getpid()}-{os.urandom(6).hex()}"
    work.mkdir()
    return work
