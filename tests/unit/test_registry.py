"""The cluster registry (`/v2/` on a real `dockyard server`) and its client, as users see them:
push, pull into an empty store, tags, catalog, HEAD, refused content, tokens, the agent's
image provider pulling by imagePullPolicy, and `dockyard image push`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from dockyard.kubelet.context import ImagePullError
from dockyard.kubelet.images import LocalImageProvider
from dockyard.runtime.imagebuild import build_busybox
from dockyard.runtime.imagelayers import write_layer
from dockyard.runtime.images import DigestMismatch, Image, ImageStore, normalize
from dockyard.runtime.registryclient import RegistryClient, RegistryConfig, RegistryError
from tests.conftest import API_ONLY, ServerProcess

DOCKYARD = [sys.executable, "-m", "dockyard.cli.main"]


# ---------------------------------------------------------------------------------- helpers


def derived_image(store: ImageStore, base: Image, tag: str, text: str, work: Path) -> Image:
    """An image made of `base`'s layers plus one holding /hello.txt with `text`."""
    extra = work / f"extra-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    (extra / "src").mkdir(parents=True, exist_ok=True)
    (extra / "src" / "hello.txt").write_text(text)
    write_layer(extra / "src", extra / "layer.tar.gz")
    manifest = json.loads((store.blobs / base.manifest_digest.split(":")[1]).read_bytes())
    layers = [store.blobs / d["digest"].split(":")[1] for d in manifest["layers"]]
    config = {k: v for k, v in base.config.items() if k != "rootfs"}
    return store.add_image([*layers, extra / "layer.tar.gz"], config, [tag])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("registry") / "data", extra_args=list(API_ONLY))
    srv.data_dir.mkdir()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def workstation(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, Image]:
    """A store with busybox, as on the machine of someone who pushes."""
    root = tmp_path_factory.mktemp("workstation")
    store = ImageStore(root / "images")
    return store, build_busybox(store, root / "cache")


def config_of(server: ServerProcess) -> RegistryConfig:
    return RegistryConfig.from_kubeconfig(server.kubeconfig)


def http(server: ServerProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or server.token}"} if token != "" else {}
    return httpx.Client(base_url=server.url, verify=server.tls(), headers=headers, timeout=30)


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


async def pushed(server: ServerProcess, store: ImageStore, ref: str) -> None:
    """`ref` in the server's registry (tests may run in any order, on any worker)."""
    async with RegistryClient(config_of(server)) as client:
        await client.push(store, ref)


# ------------------------------------------------------------------------------------ tests


def test_version_check_and_tokens(server: ServerProcess) -> None:
    with http(server, token="") as anonymous:
        answer = anonymous.get("/v2/")
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == \
            f'Bearer realm="{server.url}/v2/token",service="dockyard"'
        assert error_code(answer) == "UNAUTHORIZED"
        assert anonymous.get("/v2/busybox/tags/list").status_code == 401
        wrong = anonymous.get("/v2/", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        # Docker's flow: the realm trades a login (password: a cluster token) for a token.
        assert anonymous.get("/v2/token").status_code == 401
        basic = base64.b64encode(f"me:{server.token}".encode()).decode()
        token = anonymous.get("/v2/token", headers={"Authorization": f"Basic {basic}"})
        assert token.status_code == 200
        granted = token.json()["token"]
    with http(server, token=granted) as client:
        answer = client.get("/v2/")
        assert answer.status_code == 200 and answer.json() == {}
        assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        # The rest of the API is unchanged behind it.
        assert client.get("/api/v1/namespaces/default").json()["metadata"]["name"] == "default"


async def test_push_then_pull_into_an_empty_store(server: ServerProcess, tmp_path: Path,
                                                  workstation: tuple[ImageStore, Image]) -> None:
    store, busybox = workstation
    manifest = (store.blobs / busybox.manifest_digest.split(":")[1]).read_bytes()
    unique = derived_image(store, busybox, "demo/unique:1", f"{time.time()}", tmp_path)
    seen: list[tuple[str, str]] = []
    async with RegistryClient(config_of(server)) as client:
        name, digest, size = await client.push(store, "demo/unique:1",
                                               lambda d, what: seen.append((d, what)))
        assert (name, digest) == ("demo/unique", unique.manifest_digest)
        # The busybox layer may be there already; the new layer and the config are not.
        assert [what for _, what in seen[-2:]] == ["Pushed", "Pushed"]
        assert seen[-1][0] == unique.id
        name, digest, size = await client.push(store, "busybox")
        assert (name, digest, size) == ("busybox", busybox.manifest_digest, len(manifest))
        seen.clear()
        await client.push(store, "busybox", lambda d, what: seen.append((d, what)))
        blobs = [d["digest"] for d in json.loads(manifest)["layers"]] + [busybox.id]
        assert seen == [(d, "Layer already exists") for d in blobs]

        empty = ImageStore(tmp_path / "node" / "images")
        pulled = await client.pull(empty, "busybox")
        assert pulled.id == busybox.id and pulled.manifest_digest == busybox.manifest_digest
        assert pulled.repo_tags == ("busybox:latest",)
        assert (pulled.layer_dirs[0] / "bin" / "busybox").is_file()
        assert os.listdir(empty.root / "pulls") == []  # the download area is cleaned
        # Every spelling of the name is the same repository.
        for spelling in ("busybox", "library/busybox", "docker.io/library/busybox"):
            assert await client.resolve(f"{spelling}:latest") == busybox.manifest_digest
        assert await client.tags("library/busybox") == ["latest"]
        assert "busybox" in await client.catalog()

    with http(server) as api:
        head = api.head("/v2/busybox/manifests/latest")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Docker-Content-Digest"] == busybox.manifest_digest
        assert head.headers["Content-Length"] == str(len(manifest))
        assert head.headers["Content-Type"] == json.loads(manifest)["mediaType"]
        by_digest = api.get(f"/v2/busybox/manifests/{busybox.manifest_digest}")
        assert by_digest.content == manifest
        layer = json.loads(manifest)["layers"][0]
        blob = api.head(f"/v2/busybox/blobs/{layer['digest']}")
        assert blob.status_code == 200 and blob.headers["Content-Length"] == str(layer["size"])
        assert blob.headers["Docker-Content-Digest"] == layer["digest"]
        part = api.get(f"/v2/busybox/blobs/{layer['digest']}", headers={"Range": "bytes=0-1"})
        assert part.status_code == 206 and part.content == b"\x1f\x8b"
        missing = api.get("/v2/busybox/manifests/nope")
        assert missing.status_code == 404 and error_code(missing) == "MANIFEST_UNKNOWN"
        assert error_code(api.get("/v2/nothing-here/tags/list")) == "NAME_UNKNOWN"
        assert error_code(api.get(f"/v2/busybox/blobs/sha256:{'0' * 64}")) == "BLOB_UNKNOWN"
        assert error_code(api.get("/v2/Busybox/tags/list")) == "NAME_INVALID"
        page = api.get("/v2/_catalog", params={"n": 1})
        assert len(page.json()["repositories"]) == 1


def test_uploads_are_verified(server: ServerProcess) -> None:
    data = b"some bytes of a blob"
    with http(server) as api:
        start = api.post("/v2/demo/blobs/uploads/")
        assert start.status_code == 202
        wrong = api.put(start.headers["Location"], params={"digest": sha(b"other")},
                        content=data)
        assert wrong.status_code == 400 and error_code(wrong) == "DIGEST_INVALID"
        assert api.head(f"/v2/demo/blobs/{sha(data)}").status_code == 404
        # A finished (or refused) upload is gone.
        gone = api.put(start.headers["Location"], params={"digest": sha(data)}, content=data)
        assert error_code(gone) == "BLOB_UPLOAD_UNKNOWN"

        # Chunked: PATCHes in order, then PUT with the digest.
        start = api.post("/v2/demo/blobs/uploads/")
        where = start.headers["Location"]
        first = api.patch(where, content=data[:5], headers={"Content-Range": "0-4"})
        assert first.status_code == 202 and first.headers["Range"] == "0-4"
        skipped = api.patch(where, content=data[9:], headers={"Content-Range": "9-19"})
        assert skipped.status_code == 416 and error_code(skipped) == "BLOB_UPLOAD_INVALID"
        api.patch(where, content=data[5:])
        done = api.put(where, params={"digest": sha(data)})
        assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == sha(data)
        assert api.get(f"/v2/demo/blobs/{sha(data)}").content == data

        # A monolithic POST, and a manifest whose layer is not what its config says.
        layer = b"not a tar"
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [sha(b"something else")]}}).encode()
        for blob in (layer, config):
            posted = api.post("/v2/demo/blobs/uploads/", params={"digest": sha(blob)},
                              content=blob)
            assert posted.status_code == 201
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": sha(layer), "size": len(layer)}]}).encode()
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        refused = api.put("/v2/demo/manifests/v1", content=manifest, headers=headers)
        assert refused.status_code == 400 and error_code(refused) == "MANIFEST_INVALID"
        assert api.get("/v2/demo/manifests/v1").status_code == 404
        by_digest = api.put(f"/v2/demo/manifests/{sha(b'x')}", content=manifest,
                            headers=headers)
        assert error_code(by_digest) == "DIGEST_INVALID"
        unknown = manifest.replace(sha(layer).encode(), sha(b"never uploaded").encode())
        missing = api.put("/v2/demo/manifests/v1", content=unknown, headers=headers)
        assert missing.status_code == 400 and error_code(missing) == "MANIFEST_BLOB_UNKNOWN"
        index = json.dumps({"schemaVersion": 2, "manifests": [],
                            "mediaType": "application/vnd.oci.image.index.v1+json"}).encode()
        assert error_code(api.put("/v2/demo/manifests/v1", content=index)) == \
            "MANIFEST_INVALID"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_client_refuses_tampered_content(tmp_path: Path,
                                               workstation: tuple[ImageStore, Image]) -> None:
    """A registry that serves a layer other than the one the manifest names: the pull fails
    and leaves nothing in the store."""
    store, busybox = workstation
    manifest = (store.blobs / busybox.manifest_digest.split(":")[1]).read_bytes()
    layer_digest = json.loads(manifest)["layers"][0]["digest"]

    async def get_manifest(_: web.Request) -> web.Response:
        return web.Response(body=manifest, headers={
            "Content-Type": json.loads(manifest)["mediaType"],
            "Docker-Content-Digest": busybox.manifest_digest})

    async def get_blob(request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        data = (store.blobs / digest.split(":")[1]).read_bytes()
        if digest == layer_digest:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/v2/library/tampered/manifests/{ref}", get_manifest)
    app.router.add_get("/v2/library/tampered/blobs/{digest}", get_blob)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        empty = ImageStore(tmp_path / "images")
        async with RegistryClient(RegistryConfig(f"http://127.0.0.1:{port}")) as client:
            with pytest.raises(DigestMismatch, match=f"blob {layer_digest} does not match"):
                await client.pull(empty, f"127.0.0.1:{port}/library/tampered:latest")
        assert empty.list() == [] and os.listdir(empty.root / "pulls") == []
        assert os.listdir(empty.blobs) == []
    finally:
        await runner.cleanup()


async def test_node_pulls_by_image_pull_policy(server: ServerProcess, tmp_path: Path,
                                               workstation: tuple[ImageStore, Image]) -> None:
    store, busybox = workstation
    first = derived_image(store, busybox, "demo/app:1", "first", tmp_path)
    async with RegistryClient(config_of(server)) as client:
        await client.push(store, "demo/app:1")
    node = ImageStore(tmp_path / "node")
    provider = LocalImageProvider(node, builds={}, registry=config_of(server))
    try:
        spec, present = await provider.ensure("demo/app:1", "IfNotPresent")
        assert (spec.image_id, present) == (first.id, False)
        assert [d.name for d in spec.layer_dirs] == [d.name for d in first.layer_dirs]
        assert (spec.layer_dirs[-1] / "hello.txt").read_text() == "first"
        assert (await provider.ensure("demo/app:1", "Always"))[1] is True  # same digest
        # A reference naming the cluster registry itself is the same image there.
        host = config_of(server).host
        spec, present = await provider.ensure(f"{host}/demo/app:1", "IfNotPresent")
        assert (spec.image_id, present) == (first.id, False)
        assert node.get(f"{host}/demo/app:1").manifest_digest == first.manifest_digest
        with pytest.raises(ImagePullError) as err:
            await provider.ensure(f"{host}/demo/app:9", "IfNotPresent")
        assert f"{host}/demo/app:9 not found in the cluster registry" in err.value.message
        assert "never from" not in err.value.message

        # The tag moves on the server: Always pulls the new image, IfNotPresent keeps the old.
        second = derived_image(store, busybox, "demo/app:1", "second", tmp_path)
        async with RegistryClient(config_of(server)) as client:
            await client.push(store, "demo/app:1")
        assert (await provider.ensure("demo/app:1", "IfNotPresent"))[0].image_id == first.id
        spec, present = await provider.ensure("demo/app:1", "Always")
        assert (spec.image_id, present) == (second.id, False)

        # Nothing but the cluster registry is asked, and quickly.
        started = time.monotonic()
        with pytest.raises(ImagePullError) as err:
            await provider.ensure("docker.io/library/nginx:1.25", "IfNotPresent")
        assert time.monotonic() - started < 5
        assert err.value.reason == "ErrImagePull"
        assert err.value.message.startswith('Failed to pull image "docker.io/library/nginx:1.25"'
                                            ": nginx:1.25 not found in the cluster registry at "
                                            f"{server.url}")
        assert "never from docker.io (this cluster has no internet access)" in err.value.message
        assert "MANIFEST_UNKNOWN" in err.value.message
        with pytest.raises(ImagePullError) as err:
            await provider.ensure("demo/app:2", "Never")
        assert err.value.reason == "ErrImageNeverPull"
    finally:
        await provider.close()

    # The registry down: Always keeps the local image, a missing one is ErrImagePull.
    down = RegistryConfig(f"https://127.0.0.1:{_free_port()}", "token")
    offline = LocalImageProvider(node, builds={}, registry=down)
    try:
        spec, present = await offline.ensure("demo/app:1", "Always")
        assert (spec.image_id, present) == (second.id, True)
        with pytest.raises(ImagePullError) as err:
            await offline.ensure("demo/other:1", "IfNotPresent")
        assert "cannot reach the cluster registry at https://127.0.0.1:" in err.value.message
    finally:
        await offline.close()


async def test_node_tokens_pull_but_do_not_push(server: ServerProcess, tmp_path: Path,
                                                workstation: tuple[ImageStore, Image]) -> None:
    from dockyard.kubelet.bootstrap import join

    store, _ = workstation
    await pushed(server, store, "busybox")
    token = subprocess.run([*DOCKYARD, "token", "create", "--data-dir", str(server.data_dir),
                            "--quiet"], capture_output=True, text=True, check=True).stdout
    creds = await join(tmp_path / "agent", server=server.url, token=token.strip(),
                       ca_cert_hash="", node_name="reader", addresses=["127.0.0.1"])
    config = RegistryConfig(server.url, creds.token, server.tls())
    async with RegistryClient(config) as client:
        await client.pull(ImageStore(tmp_path / "images"), "busybox")
        with pytest.raises(RegistryError) as err:
            await client.push(store, "busybox")
        assert err.value.status == 403 and err.value.code == "DENIED"
        assert "system:node:reader may pull images but not push them" in err.value.message


def test_image_push_command(server: ServerProcess, tmp_path: Path,
                            workstation: tuple[ImageStore, Image]) -> None:
    store, busybox = workstation
    store.tag("busybox", "tools/bb:v2")
    out = subprocess.run([*DOCKYARD, "image", "push", "tools/bb:v2", "--data-dir",
                          str(store.root.parent), "--kubeconfig", str(server.kubeconfig)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    host = server.url.removeprefix("https://")
    lines = out.stdout.splitlines()
    assert lines[0] == f"The push refers to repository [{host}/tools/bb]"
    assert all(line.endswith((": Pushed", ": Layer already exists")) for line in lines[1:-1])
    assert lines[-1].startswith(f"v2: digest: {busybox.manifest_digest} size: ")
    with http(server) as api:
        assert api.get("/v2/tools/bb/tags/list").json() == {"name": "tools/bb", "tags": ["v2"]}

    absent = subprocess.run([*DOCKYARD, "image", "push", "no/such:1", "--data-dir",
                             str(store.root.parent), "--kubeconfig", str(server.kubeconfig)],
                            capture_output=True, text=True, timeout=60)
    assert absent.returncode == 1 and "No such image: no/such:1" in absent.stderr


async def test_concurrent_pulls_share_one_download(
        server: ServerProcess, tmp_path: Path, workstation: tuple[ImageStore, Image],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pods waiting for the same image make one pull; a buildable image the registry lacks
    is built here."""
    store, busybox = workstation
    await pushed(server, store, "busybox")
    node = ImageStore(tmp_path / "node")

    def build(target: ImageStore, cache: Path) -> Image:
        build_busybox(target, cache)
        return target.tag("busybox", "local/only:1")

    provider = LocalImageProvider(node, cache_dir=tmp_path / "cache", registry=config_of(server),
                                  builds={normalize("local/only:1"): build})
    pulls: list[str] = []
    real_pull = RegistryClient.pull

    async def counting_pull(self: RegistryClient, store: ImageStore, ref: str) -> Image:
        pulls.append(ref)
        return await real_pull(self, store, ref)

    monkeypatch.setattr(RegistryClient, "pull", counting_pull)
    try:
        results = await asyncio.gather(*(provider.ensure("busybox", "IfNotPresent")
                                         for _ in range(5)))
        assert pulls == ["docker.io/library/busybox:latest"]
        assert {spec.image_id for spec, _ in results} == {busybox.id}
        assert [present for _, present in results] == [False] * 5
        spec, present = await provider.ensure("local/only:1", "IfNotPresent")
        assert (spec.image_id, present) == (busybox.id, False)  # 404 there: built here
        assert pulls[-1] == "docker.io/local/only:1"
    finally:
        await provider.close()
    assert sorted(node.get("busybox").repo_tags) == ["busybox:latest", "local/only:1"]
