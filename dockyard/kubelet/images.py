"""The node agent's images: pod image references to unpacked layers, honouring imagePullPolicy.

Images come from the cluster registry (the API server's `/v2/`, apiserver/registry.py) when
the agent has one, and otherwise from the builds this machine can make (runtime/imagebuild.py)
or `dockyard image import`. Kubernetes' rules hold: `Never` only uses what is present,
`IfNotPresent` pulls what is missing, `Always` asks the registry what the tag names now and
pulls when the digest changed. A buildable image the registry lacks (busybox, ...) is built
here. The data plane does not depend on the control plane: with the registry unreachable,
`Always` keeps using the local image (and says so in the agent's log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from dockyard.kubelet.context import ImagePullError
from dockyard.runtime.cri import ImageSpec
from dockyard.runtime.imagebuild import BUILDABLE, KNOWN_BUILDS, default_cache_dir
from dockyard.runtime.images import (
    Image,
    ImageError,
    ImageStore,
    InvalidReference,
    normalize,
    parse_reference,
)
from dockyard.runtime.registryclient import RegistryClient, RegistryConfig, RegistryError

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class LocalImageProvider:
    """`ImageProvider` over the local image store."""

    def __init__(self, store: ImageStore, cache_dir: Path | None = None,
                 builds: dict[str, Any] | None = None,
                 registry: RegistryConfig | None = None) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.builds = KNOWN_BUILDS if builds is None else builds
        self.registry = registry
        self._client: RegistryClient | None = None
        self._configs: dict[str, Obj] = {}  # image id -> config
        self._building: dict[str, asyncio.Future[Image]] = {}
        self._pulling: dict[str, asyncio.Future[Image]] = {}
        self._always_noted: set[str] = set()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ensure(self, ref: str, pull_policy: str) -> tuple[ImageSpec, bool]:
        try:
            name = normalize(ref)
        except InvalidReference as e:
            raise ImagePullError("InvalidImageName",
                                 f'Failed to apply default image tag "{ref}": {e}') from None
        image = await asyncio.to_thread(self._present, name)
        if self.registry is not None and pull_policy != "Never":
            return await self._ensure_from_registry(ref, name, image, pull_policy)
        if image is not None:
            if pull_policy == "Always" and name not in self._always_noted:
                self._always_noted.add(name)
                log.info('imagePullPolicy Always for "%s": no registry is configured, using '
                         "the local image %s", ref, image.short_id)
            return self._spec(ref, image), True
        if pull_policy == "Never":
            raise ImagePullError("ErrImageNeverPull", f'Container image "{ref}" is not '
                                 "present with pull policy of Never")
        if name not in self.builds:
            raise ImagePullError("ErrImagePull", (
                f'Failed to pull image "{ref}": image "{name}" is not in this node\'s local '
                "image store and no registry is configured; load it with `dockyard image "
                "import FILE` (a `docker save` or OCI archive), or use one of the images "
                f"built here: {', '.join(BUILDABLE)}"))
        return self._spec(ref, await self._build(ref, name)), False

    # ----------------------------------------------------------------------- the registry

    async def _ensure_from_registry(self, ref: str, name: str, image: Image | None,
                                    pull_policy: str) -> tuple[ImageSpec, bool]:
        if image is not None:
            if pull_policy != "Always" or parse_reference(name).digest:
                return self._spec(ref, image), True
            newer = await self._refresh(ref, name, image)
            return self._spec(ref, newer or image), newer is None
        try:
            return self._spec(ref, await self._pull(ref, name)), False
        except ImagePullError:
            if name not in self.builds:
                raise
        return self._spec(ref, await self._build(ref, name)), False

    async def _refresh(self, ref: str, name: str, image: Image) -> Image | None:
        """`Always`: what the tag names in the registry now; the pulled image if that is not
        the local one, else None."""
        try:
            digest = await self._registry_client().resolve(name)
        except RegistryError as e:
            if name not in self._always_noted:
                self._always_noted.add(name)
                why = "the cluster registry does not have it" if e.not_found else \
                    f"the cluster registry cannot be asked ({e.message})"
                log.info('imagePullPolicy Always for "%s": %s; using the local image %s',
                         ref, why, image.short_id)
            return None
        if digest == image.manifest_digest:
            return None
        log.info('image "%s" changed in the cluster registry (%s, local %s): pulling', ref,
                 digest, image.manifest_digest)
        return await self._pull(ref, name)

    def _registry_client(self) -> RegistryClient:
        assert self.registry is not None
        if self._client is None:
            self._client = RegistryClient(self.registry)
        return self._client

    async def _pull(self, ref: str, name: str) -> Image:
        """Pull once however many pods wait for the same image. Raises ImagePullError."""
        running = self._pulling.get(name)
        if running is None:
            running = asyncio.ensure_future(self._run_pull(ref, name))
            self._pulling[name] = running
            running.add_done_callback(lambda _: self._pulling.pop(name, None))
        return await asyncio.shield(running)

    async def _run_pull(self, ref: str, name: str) -> Image:
        started = time.monotonic()
        client = self._registry_client()
        try:
            image = await client.pull(self.store, name)
        except RegistryError as e:
            raise ImagePullError("ErrImagePull", self._pull_failure(ref, name, e)) from None
        except ImageError as e:
            raise ImagePullError("ErrImagePull", f'Failed to pull image "{ref}": {e}') from None
        log.info("pulled image %s (%s) from %s in %.1fs", name, image.short_id,
                 client.url, time.monotonic() - started)
        return image

    def _pull_failure(self, ref: str, name: str, e: RegistryError) -> str:
        assert self.registry is not None
        url = self.registry.url
        parsed = parse_reference(name)
        domain = parsed.repository.partition("/")[0]
        if e.not_found:
            elsewhere = "" if domain == self.registry.host else (
                f"; images are pulled only from the cluster registry, never from {domain} "
                "(this cluster has no internet access)")
            return (f'Failed to pull image "{ref}": {parsed.familiar()} not found in the '
                    f"cluster registry at {url} ({e.message}){elsewhere}: import it on a "
                    "server with `dockyard image import FILE`, or push it with `dockyard "
                    f"image push {ref}`")
        if e.unreachable:
            return f'Failed to pull image "{ref}": {e.message}'
        if e.status in (401, 403):
            return (f'Failed to pull image "{ref}": the cluster registry at {url} refused '
                    f"this node's credentials ({e.message})")
        return f'Failed to pull image "{ref}": the cluster registry at {url}: {e.message}'

    # ------------------------------------------------------------------------------------

    def image_config(self, spec: ImageSpec) -> Obj:
        config = self._configs.get(spec.image_id)
        if config is None:
            image = self.store.resolve(spec.image_id)
            config = image.config if image else {}
            self._configs[spec.image_id] = config
        return dict(config.get("config") or {})

    def _present(self, name: str) -> Image | None:
        image = self.store.resolve(name)
        return self.store.ensure_unpacked(image) if image else None

    def _spec(self, ref: str, image: Image) -> ImageSpec:
        self._configs[image.id] = image.config
        return ImageSpec(ref=ref, image_id=image.id, layer_dirs=image.layer_dirs,
                         user=str((image.config.get("config") or {}).get("User") or ""))

    async def _build(self, ref: str, name: str) -> Image:
        """Build once however many pods wait for the same image."""
        running = self._building.get(name)
        if running is None:
            running = asyncio.ensure_future(self._run_build(ref, name))
            self._building[name] = running
            running.add_done_callback(lambda _: self._building.pop(name, None))
        return await asyncio.shield(running)

    async def _run_build(self, ref: str, name: str) -> Image:
        started = time.monotonic()
        try:
            image = await asyncio.to_thread(self.builds[name], self.store,
                                            self.cache_dir or default_cache_dir())
        except Exception as e:  # noqa: BLE001 - any failure is the pod's ErrImagePull
            raise ImagePullError("ErrImagePull",
                                 f'Failed to pull image "{ref}": building it failed: {e}'
                                 ) from None
        log.info("built image %s (%s) in %.1fs", name, image.short_id,
                 time.monotonic() - started)
        return image
