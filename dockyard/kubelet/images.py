"""The node agent's images: pod image references to unpacked layers, honouring imagePullPolicy.

There is no registry, so "pulling" means building one of the images this machine can make
(runtime/imagebuild.py); anything else must have been loaded with `dockyard image import`.
Kubernetes' rules still hold: `Never` only uses what is present, `IfNotPresent` pulls (here:
builds) what is missing, and `Always` would ask the registry for a newer image — with none
configured, the local image is used and the agent logs that it did so.
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
from dockyard.runtime.images import Image, ImageStore, InvalidReference, normalize

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class LocalImageProvider:
    """`ImageProvider` over the local image store."""

    def __init__(self, store: ImageStore, cache_dir: Path | None = None,
                 builds: dict[str, Any] | None = None) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.builds = KNOWN_BUILDS if builds is None else builds
        self._configs: dict[str, Obj] = {}  # image id -> config
        self._building: dict[str, asyncio.Future[Image]] = {}
        self._always_noted: set[str] = set()

    async def ensure(self, ref: str, pull_policy: str) -> tuple[ImageSpec, bool]:
        try:
            name = normalize(ref)
        except InvalidReference as e:
            raise ImagePullError("InvalidImageName",
                                 f'Failed to apply default image tag "{ref}": {e}') from None
        image = await asyncio.to_thread(self._present, name)
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
