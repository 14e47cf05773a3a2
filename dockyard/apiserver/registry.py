"""The cluster's image registry: the OCI distribution API (registry v2) over the server's store.

Agents pull the images a pod needs from here, and `dockyard image push` (or `docker push`)
sends images here; the content is the server's own image store (DATA_DIR/images), so an
image imported with `dockyard image import` on the server is at once pullable. Served under
`/v2/` on the API server's HTTPS port with the same bearer tokens as the API; node tokens may
only read. What is implemented is the part of the distribution spec that pull and push use:

    GET  /v2/                                     version check (401 + WWW-Authenticate)
    GET  /v2/token                                a token for Docker's Basic login (realm)
    GET|HEAD /v2/<name>/manifests/<tag|digest>    image manifests, Docker-Content-Digest
    GET|HEAD /v2/<name>/blobs/<digest>            configs and layers, streamed (Range too)
    GET  /v2/<name>/tags/list, /v2/_catalog       with `n` and `last` pagination
    POST /v2/<name>/blobs/uploads/[?digest=|?mount=&from=]   start (or finish) an upload
    PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/<id>       chunks, ?digest= to finish
    PUT  /v2/<name>/manifests/<tag|digest>        commit an image whose blobs were uploaded

Repository names map onto the store's normalized references as Docker reads them (`busybox`
and `library/busybox` are `docker.io/library/busybox`). Every uploaded blob is verified
against its digest; a pushed manifest becomes an image only through the store's import path,
which verifies each layer's diff_id while unpacking it, and writes the index last. Uploads
stay outside the store's blob directory (its garbage collector keeps only what an index entry
references) until their manifest arrives: DATA_DIR/images/uploads/{sessions,blobs}.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.runtime.imagearchive import Candidate, ImageError
from dockyard.runtime.imageref import InvalidReference, parse_reference
from dockyard.runtime.images import ImageStore
from dockyard.runtime.registryclient import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    commit_image,
)

log = logging.getLogger("dockyard.registry")

Obj = dict[str, Any]
Tokens = Callable[[], dict[str, dict]]
Fallback = Callable[[str], Awaitable[dict | None]] | None

PREFIX = "/v2"
MAX_MANIFEST_BYTES = 4 << 20
STALE_UPLOAD_SECONDS = 24 * 3600.0
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_UUID_RE = re.compile(r"[0-9a-f]{32}")
_ROUTES = [  # (pattern over the path after /v2/, handler name); uploads before blobs
    (re.compile(r"(?P<name>.+)/manifests/(?P<ref>[^/]+)"), "manifest"),
    (re.compile(r"(?P<name>.+)/blobs/uploads/?"), "upload_start"),
    (re.compile(r"(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)"), "upload"),
    (re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"), "blob"),
    (re.compile(r"(?P<name>.+)/tags/list"), "tags"),
]
_READ = ("GET", "HEAD")


class RegistryError(Exception):
    """One error of the distribution spec's JSON error format."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail, self.headers = detail, headers or {}

    def response(self) -> Response:
        error: Obj = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return Response(json.dumps({"errors": [error]}), status_code=self.status,
                        media_type="application/json",
                        headers={**_VERSION_HEADER, **self.headers})


_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def _name_unknown(name: str) -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", f"repository {name!r} is not known to this "
                         "registry", {"name": name})


def _repository(name: str) -> str:
    """The store's repository for a registry name: `busybox` -> docker.io/library/busybox."""
    last = name.rpartition("/")[2]
    if "@" in name or ":" in last or name != name.lower():
        raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}",
                            {"name": name})
    try:
        return parse_reference(name).repository
    except InvalidReference as e:
        raise RegistryError(400, "NAME_INVALID", str(e), {"name": name}) from None


def _media_type(manifest: bytes) -> str:
    try:
        return str(json.loads(manifest).get("mediaType") or OCI_MANIFEST)
    except (ValueError, AttributeError):
        return OCI_MANIFEST


def _paginate(items: list[str], request: Request, path: str) -> tuple[list[str], dict[str, str]]:
    """`n` and `last` as the spec says, with a Link header to the next page."""
    last = request.query_params.get("last")
    if last:
        items = [i for i in items if i > last]
    headers = dict(_VERSION_HEADER)
    n = request.query_params.get("n")
    if n is not None:
        try:
            limit = max(0, int(n))
        except ValueError:
            raise RegistryError(400, "PAGINATION_NUMBER_INVALID",
                                f"invalid number of results requested: {n!r}") from None
        if len(items) > limit:
            items = items[:limit]
            if items:
                headers["Link"] = f'<{path}?n={limit}&last={quote(items[-1])}>; rel="next"'
    return items, headers


def _json(body: Obj, headers: dict[str, str]) -> Response:
    return Response(json.dumps(body), media_type="application/json", headers=headers)


class RegistryApp:
    """The `/v2/` ASGI app over one image store; authenticates every request itself (the
    spec's 401 carries a Bearer challenge that the API's 401 does not)."""

    def __init__(self, store: ImageStore, *, tokens: Tokens, fallback: Fallback = None) -> None:
        self.store = store
        self.tokens = tokens
        self.fallback = fallback
        self.sessions = store.root / "uploads" / "sessions"
        self.staged = store.root / "uploads" / "blobs"
        for d in (self.sessions, self.staged):
            d.mkdir(parents=True, exist_ok=True)
        self._last_prune = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except RegistryError as e:
            response = e.response()
        except Exception:
            log.exception("registry: internal error serving %s %s", request.method,
                          request.url.path)
            response = RegistryError(500, "UNKNOWN", "an internal error occurred").response()
        await response(scope, receive, send)

    # ---------------------------------------------------------------------------------- auth

    async def _user(self, request: Request) -> Obj | None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = credentials.strip()
        if scheme.lower() == "basic":  # `docker login -u anything -p TOKEN`
            try:
                token = base64.b64decode(token).decode().partition(":")[2]
            except ValueError:
                return None
        elif scheme.lower() != "bearer":
            return None
        if not token:
            return None
        user = self.tokens().get(token)
        if user is None and self.fallback is not None:
            user = await self.fallback(token)
        return user

    def _challenge(self, request: Request) -> RegistryError:
        realm = f"https://{request.headers.get('host', 'localhost')}{PREFIX}/token"
        return RegistryError(401, "UNAUTHORIZED", "authentication required: send the "
                             "cluster's bearer token (a kubeconfig's user token)",
                             headers={"WWW-Authenticate":
                                      f'Bearer realm="{realm}",service="dockyard"'})

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        user = await self._user(request)
        if path == f"{PREFIX}/token":
            return self._token(request, user)
        if user is None:
            raise self._challenge(request)
        method = request.method
        if method not in _READ and "system:nodes" in (user.get("groups") or []):
            raise RegistryError(403, "DENIED", f"{user.get('user')} may pull images but not "
                                "push them: use an administrator's kubeconfig")
        rest = path[len(PREFIX):].lstrip("/")
        if rest == "":
            if method not in _READ:
                raise _unsupported(method)
            return Response(b"{}", media_type="application/json", headers=_VERSION_HEADER)
        if rest == "_catalog":
            if method not in _READ:
                raise _unsupported(method)
            return await self._catalog(request)
        for pattern, handler in _ROUTES:
            found = pattern.fullmatch(rest)
            if found:
                args = found.groupdict()
                args["repo"] = _repository(args["name"])
                return await getattr(self, handler)(request, **args)
        raise RegistryError(404, "NAME_UNKNOWN", f"no registry endpoint at {path}")

    def _token(self, request: Request, user: Obj | None) -> Response:
        """Docker's token flow: the client follows the Bearer challenge's realm with its
        login (Basic, the password being a cluster token); the token is that password."""
        if user is None:
            raise RegistryError(401, "UNAUTHORIZED", "log in with a cluster token as the "
                                "password (`docker login -u <anything>`)",
                                headers={"WWW-Authenticate": 'Basic realm="dockyard"'})
        scheme, _, credentials = request.headers["authorization"].partition(" ")
        token = credentials.strip()
        if scheme.lower() == "basic":
            token = base64.b64decode(token).decode().partition(":")[2]
        return _json({"token": token, "access_token": token, "expires_in": 3600}, {})

    # ----------------------------------------------------------------------------- reading

    async def _catalog(self, request: Request) -> Response:
        images = await asyncio.to_thread(self.store.list)
        names = sorted({parse_reference(n).familiar_repository
                        for i in images for n in i.names})
        names, headers = _paginate(names, request, f"{PREFIX}/_catalog")
        return _json({"repositories": names}, headers)

    async def tags(self, request: Request, name: str, repo: str) -> Response:
        if request.method not in _READ:
            raise _unsupported(request.method)
        images = await asyncio.to_thread(self.store.list)
        refs = [parse_reference(n) for i in images for n in i.names]
        if not any(r.repository == repo for r in refs):
            raise _name_unknown(name)
        tags = sorted({r.tag for r in refs if r.repository == repo and r.tag})
        tags, headers = _paginate(tags, request, f"{PREFIX}/{name}/tags/list")
        return _json({"name": name, "tags": tags}, headers)

    async def manifest(self, request: Request, name: str, repo: str, ref: str) -> Response:
        if request.method == "PUT":
            return await self._put_manifest(request, name, repo, ref)
        if request.method not in _READ:
            raise _unsupported(request.method)
        if _DIGEST_RE.fullmatch(ref):
            target = f"{repo}@{ref}"
        elif _TAG_RE.fullmatch(ref):
            target = f"{repo}:{ref}"
        else:
            raise RegistryError(400, "TAG_INVALID" if ":" not in ref else "DIGEST_INVALID",
                                f"invalid tag or digest {ref!r}")

        def read() -> tuple[str, bytes] | None:
            image = self.store.resolve(target)
            if image is None:
                return None
            return image.manifest_digest, self._blob_path(image.manifest_digest).read_bytes()

        found = await asyncio.to_thread(read)
        if found is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest unknown: no image "
                                f"{name}{'@' if ':' in ref else ':'}{ref} in this registry",
                                {"name": name, "reference": ref})
        digest, body = found
        headers = {**_VERSION_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body,
                        media_type=_media_type(body), headers=headers)

    def _blob_path(self, digest: str) -> Path:
        """Where a blob is, in the store or among verified uploads (else the store's path,
        which does not exist)."""
        hexpart = digest.removeprefix("sha256:")
        path = self.store.blobs / hexpart
        if not path.exists() and (self.staged / hexpart).exists():
            return self.staged / hexpart
        return path

    async def blob(self, request: Request, name: str, repo: str, digest: str) -> Response:
        if request.method not in _READ:
            raise _unsupported(request.method)
        if not _DIGEST_RE.fullmatch(digest):
            raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {digest!r} (only "
                                "sha256 is supported)")
        path = self._blob_path(digest)
        if not path.is_file():
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob unknown to registry: {digest}",
                                {"digest": digest})
        return FileResponse(path, media_type="application/octet-stream",
                            headers={**_VERSION_HEADER, "Docker-Content-Digest": digest,
                                     "ETag": f'"{digest}"',
                                     "Cache-Control": "max-age=31536000"})

    # ---------------------------------------------------------------------------- uploading

    def _session(self, uuid: str, name: str) -> Path:
        path = self.sessions / uuid
        if not _UUID_RE.fullmatch(uuid) or not path.is_file():
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"blob upload {uuid!r} unknown "
                                "(finished, cancelled or expired): start a new one",
                                {"name": name})
        return path

    def _accepted(self, name: str, uuid: str, size: int, code: int = 202) -> Response:
        return Response(b"", status_code=code, headers={
            **_VERSION_HEADER, "Location": f"{PREFIX}/{name}/blobs/uploads/{uuid}",
            "Docker-Upload-UUID": uuid, "Range": f"0-{max(size - 1, 0)}",
            "Content-Length": "0"})

    def _created(self, name: str, digest: str) -> Response:
        return Response(b"", status_code=201, headers={
            **_VERSION_HEADER, "Location": f"{PREFIX}/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest, "Content-Length": "0"})

    async def upload_start(self, request: Request, name: str, repo: str) -> Response:
        if request.method != "POST":
            raise _unsupported(request.method)
        self._prune()
        mount = request.query_params.get("mount")
        if mount and _DIGEST_RE.fullmatch(mount) and self._blob_path(mount).is_file():
            return self._created(name, mount)  # one store: every blob is in every repository
        uuid = secrets.token_hex(16)
        path = self.sessions / uuid
        path.touch()
        digest = request.query_params.get("digest")
        if digest is not None:  # a monolithic upload in the POST itself
            await self._receive(request, path)
            return await self._finish(name, uuid, path, digest)
        return self._accepted(name, uuid, 0)

    async def upload(self, request: Request, name: str, repo: str, uuid: str) -> Response:
        path = self._session(uuid, name)
        method = request.method
        if method in _READ:
            return self._accepted(name, uuid, path.stat().st_size, code=204)
        if method == "DELETE":
            path.unlink(missing_ok=True)
            return Response(b"", status_code=204, headers=_VERSION_HEADER)
        if method == "PATCH":
            span = request.headers.get("content-range")
            size = path.stat().st_size
            if span:
                start = span.strip().removeprefix("bytes").strip(" =").partition("-")[0]
                if not start.isdigit() or int(start) != size:
                    raise RegistryError(416, "BLOB_UPLOAD_INVALID", f"chunk starts at {start},"
                                        f" but {size} bytes were received so far",
                                        headers={"Range": f"0-{max(size - 1, 0)}",
                                                 "Location": f"{PREFIX}/{name}/blobs/"
                                                             f"uploads/{uuid}"})
            size = await self._receive(request, path)
            return self._accepted(name, uuid, size)
        if method == "PUT":
            digest = request.query_params.get("digest")
            if digest is None:
                raise RegistryError(400, "DIGEST_INVALID", "finishing an upload needs "
                                    "?digest=sha256:<hex>")
            await self._receive(request, path)
            return await self._finish(name, uuid, path, digest)
        raise _unsupported(method)

    @staticmethod
    async def _receive(request: Request, path: Path) -> int:
        with open(path, "ab") as f:
            async for chunk in request.stream():
                f.write(chunk)
            return f.tell()

    async def _finish(self, name: str, uuid: str, path: Path, digest: str) -> Response:
        """Verify the whole upload against `digest`; a good blob joins the staged blobs."""
        try:
            if not _DIGEST_RE.fullmatch(digest):
                raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {digest!r} (only "
                                    "sha256 is supported)", {"digest": digest})
            actual = await asyncio.to_thread(_file_digest, path)
            if actual != digest:
                raise RegistryError(400, "DIGEST_INVALID", f"provided digest {digest} did not "
                                    f"match uploaded content ({actual})", {"digest": digest})
            if (self.store.blobs / digest.removeprefix("sha256:")).exists():
                path.unlink(missing_ok=True)
            else:
                os.replace(path, self.staged / digest.removeprefix("sha256:"))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self._created(name, digest)

    def _prune(self) -> None:
        """Forget uploads nobody finished and staged blobs nobody committed, after a day."""
        now = time.time()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        for d in (self.sessions, self.staged):
            for entry in d.iterdir():
                try:
                    if now - entry.stat().st_mtime > STALE_UPLOAD_SECONDS:
                        entry.unlink()
                except OSError:
                    pass

    async def _put_manifest(self, request: Request, name: str, repo: str,
                            ref: str) -> Response:
        by_digest = bool(_DIGEST_RE.fullmatch(ref))
        if not by_digest and not _TAG_RE.fullmatch(ref):
            raise RegistryError(400, "TAG_INVALID", f"invalid tag {ref!r}", {"tag": ref})
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                raise RegistryError(400, "SIZE_INVALID", "manifest larger than "
                                    f"{MAX_MANIFEST_BYTES} bytes")
        manifest = bytes(body)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if by_digest and digest != ref:
            raise RegistryError(400, "DIGEST_INVALID", f"manifest digest {digest} does not "
                                f"match the reference {ref}", {"digest": ref})
        config_desc, layers = self._check_manifest(request, manifest)
        missing = [d["digest"] for d in [config_desc, *layers]
                   if not self._blob_path(str(d.get("digest"))).is_file()]
        if missing:
            raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown to registry: "
                                f"{missing[0]} (push the blobs before the manifest)",
                                {"digest": missing[0]})
        names = [] if by_digest else [f"{repo}:{ref}"]

        def commit() -> None:
            config = self._blob_path(config_desc["digest"]).read_bytes()
            if "sha256:" + hashlib.sha256(config).hexdigest() != config_desc["digest"]:
                raise ImageError(f"config blob {config_desc['digest']} does not match its "
                                 "digest")
            commit_image(self.store, Candidate(
                config=config, layers=[self._blob_path(d["digest"]) for d in layers],
                names=names, manifest=manifest, layer_digests=[d["digest"] for d in layers]))

        try:
            await asyncio.to_thread(commit)
        except ImageError as e:
            raise RegistryError(400, "MANIFEST_INVALID", f"manifest invalid: {e}") from None
        log.info("registry: pushed %s%s%s (%s)", name, "@" if by_digest else ":", ref, digest)
        return Response(b"", status_code=201, headers={
            **_VERSION_HEADER, "Location": f"{PREFIX}/{name}/manifests/{digest}",
            "Docker-Content-Digest": digest, "Content-Length": "0"})

    @staticmethod
    def _check_manifest(request: Request, manifest: bytes) -> tuple[Obj, list[Obj]]:
        try:
            m = json.loads(manifest)
        except ValueError as e:
            raise RegistryError(400, "MANIFEST_INVALID", f"manifest invalid: {e}") from None
        if not isinstance(m, dict) or m.get("schemaVersion") != 2:
            raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: only schema "
                                "version 2 manifests (OCI or Docker) are supported")
        content_type = request.headers.get("content-type", "").partition(";")[0].strip()
        media_type = m.get("mediaType") or content_type or OCI_MANIFEST
        if media_type in INDEX_TYPES or "manifests" in m:
            raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: image indexes "
                                f"({OCI_INDEX}, {DOCKER_LIST}) are not supported: push one "
                                "platform's image")
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(400, "MANIFEST_INVALID", f"manifest invalid: unsupported "
                                f"media type {media_type!r} (use {OCI_MANIFEST} or "
                                f"{DOCKER_MANIFEST})")
        config, layers = m.get("config"), m.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list) or not all(
                isinstance(d, dict) and _DIGEST_RE.fullmatch(str(d.get("digest")))
                for d in [config, *layers]):
            raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: it needs a config"
                                " and a list of layers, each with a sha256 digest")
        for d in layers:
            if "zstd" in str(d.get("mediaType", "")):
                raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: zstd layers "
                                    "are not supported; push gzip or uncompressed layers")
        return config, layers


def _unsupported(method: str) -> RegistryError:
    return RegistryError(405, "UNSUPPORTED", f"the operation is unsupported ({method})")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def with_registry(api: ASGIApp, store: ImageStore, *, tokens: Tokens,
                  fallback: Fallback = None) -> ASGIApp:
    """The API app with the registry in front of it for `/v2` paths."""
    registry = RegistryApp(store, tokens=tokens, fallback=fallback)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await registry(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app
