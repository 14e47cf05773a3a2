"""The agent's image provider: imagePullPolicy and the waiting reasons a pod shows."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from dockyard.kubelet.context import ImagePullError
from dockyard.kubelet.images import LocalImageProvider
from dockyard.runtime.imagebuild import build_busybox
from dockyard.runtime.images import Image, ImageError, ImageStore, normalize


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


class CountingBuilds(dict):
    """KNOWN_BUILDS stand-in: builds busybox under another name, counting the builds."""

    def __init__(self, name: str, fail: bool = False) -> None:
        super().__init__({normalize(name): self.build})
        self.name, self.fail, self.calls = name, fail, 0
        self.release = threading.Event()

    def build(self, store: ImageStore, cache_dir: Path) -> Image:
        self.calls += 1
        self.release.wait(5)  # hold the build so concurrent ensures pile up behind it
        if self.fail:
            raise ImageError("debootstrap failed (exit 1)")
        build_busybox(store, cache_dir)
        return store.tag("busybox", self.name)


async def test_present_image_is_used_as_is(store: ImageStore, tmp_path: Path) -> None:
    image = build_busybox(store, tmp_path)
    provider = LocalImageProvider(store, cache_dir=tmp_path)
    for policy in ("IfNotPresent", "Always", "Never"):
        spec, present = await provider.ensure("busybox:latest", policy)
        assert present is True
        assert spec.ref == "busybox:latest" and spec.image_id == image.id
        assert spec.layer_dirs == image.layer_dirs and spec.user == ""
    config = provider.image_config(spec)
    assert config["Cmd"] == ["sh"] and config["Env"][0].startswith("PATH=")
    assert LocalImageProvider(store).image_config(spec)["Cmd"] == ["sh"]  # from the store


async def test_absent_with_never_is_err_image_never_pull(store: ImageStore) -> None:
    provider = LocalImageProvider(store)
    with pytest.raises(ImagePullError) as err:
        await provider.ensure("busybox", "Never")
    assert err.value.reason == "ErrImageNeverPull"
    assert err.value.message == ('Container image "busybox" is not present with pull policy '
                                 "of Never")


@pytest.mark.parametrize("policy", ["IfNotPresent", "Always"])
async def test_absent_unknown_image_is_err_image_pull(store: ImageStore, policy: str) -> None:
    provider = LocalImageProvider(store)
    with pytest.raises(ImagePullError) as err:
        await provider.ensure("nginx:1.25", policy)
    assert err.value.reason == "ErrImagePull"
    assert "docker.io/library/nginx:1.25" in err.value.message
    assert "no registry is configured" in err.value.message
    assert "dockyard image import" in err.value.message


@pytest.mark.parametrize("ref", ["Busybox", "busybox:", "bad image"])
async def test_malformed_name_is_invalid_image_name(store: ImageStore, ref: str) -> None:
    with pytest.raises(ImagePullError) as err:
        await LocalImageProvider(store).ensure(ref, "IfNotPresent")
    assert err.value.reason == "InvalidImageName"
    assert f'"{ref}"' in err.value.message and "invalid reference format" in err.value.message


async def test_known_image_is_built_once_for_concurrent_pods(store: ImageStore,
                                                            tmp_path: Path) -> None:
    builds = CountingBuilds("localhost/built:1")
    provider = LocalImageProvider(store, cache_dir=tmp_path, builds=builds)
    waiting = [asyncio.create_task(provider.ensure("localhost/built:1", "IfNotPresent"))
               for _ in range(5)]
    await asyncio.sleep(0.1)
    builds.release.set()
    results = await asyncio.gather(*waiting)
    assert builds.calls == 1
    assert {spec.image_id for spec, _ in results} == {store.resolve("busybox").id}
    assert all(present is False for _, present in results)
    spec, present = await provider.ensure("localhost/built:1", "IfNotPresent")
    assert present is True and builds.calls == 1


async def test_failed_build_is_err_image_pull_and_retried(store: ImageStore,
                                                         tmp_path: Path) -> None:
    builds = CountingBuilds("localhost/built:1", fail=True)
    builds.release.set()
    provider = LocalImageProvider(store, cache_dir=tmp_path, builds=builds)
    for attempt in (1, 2):
        with pytest.raises(ImagePullError) as err:
            await provider.ensure("localhost/built:1", "Always")
        assert err.value.reason == "ErrImagePull"
        assert "debootstrap failed" in err.value.message
        assert builds.calls == attempt


async def test_busybox_is_built_on_demand(store: ImageStore, tmp_path: Path) -> None:
    provider = LocalImageProvider(store, cache_dir=tmp_path)
    spec, present = await provider.ensure("docker.io/library/busybox", "IfNotPresent")
    assert present is False
    assert spec.image_id == store.resolve("busybox").id
    assert (spec.layer_dirs[0] / "bin/busybox").is_file()


async def test_missing_layer_directory_is_unpacked_again(store: ImageStore,
                                                        tmp_path: Path) -> None:
    image = build_busybox(store, tmp_path)
    shutil.rmtree(image.layer_dirs[0])
    spec, present = await LocalImageProvider(store).ensure("busybox", "Never")
    assert present is True
    assert (spec.layer_dirs[0] / "bin/busybox").is_file()
