"""`kubectl logs` and `kubectl exec` through a real `dockyard server` to a node agent's HTTPS port.

The agent app runs in the test's event loop on 127.0.0.1 with a fake runtime: its containers
point at CRI log files the test writes, and exec runs local processes (a real pty for -t), so
kubectl's WebSocket protocol, the API server's proxy, TLS with the cluster CA and the agent's
token check are all the real ones. kubectl runs in threads: the agent lives in this loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest
from cryptography import x509

from dockyard.apiserver import pki
from dockyard.kubelet import logs
from dockyard.kubelet.server import AgentServer, build_agent_app, serve_agent
from dockyard.runtime.cri import ContainerState
from tests.conftest import ServerProcess, kubectl_binary
from tests.fakeexecruntime import FakeExecRuntime
from tests.terminal import run_in_terminal

PODS = "/api/v1/namespaces/default/pods"
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"


def record(content: str, *, ago: float = 0.0, stream: str = "stdout") -> str:
    stamp = (datetime.now(UTC) - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {content}\n"


def append(path: Path, *records: str) -> None:
    with open(path, "a") as f:
        f.write("".join(records))


@dataclass
class Cluster:
    server: ServerProcess
    runtime: FakeExecRuntime
    logs: Path
    agent_port: int

    async def kubectl(self, *args: str, input: str | None = None,
                      ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.server.kubectl, *args, input=input, check=False)


async def start_agent(server: ServerProcess, runtime: FakeExecRuntime, workdir: Path,
                      node: str, token: str, ca_dir: Path | None = None,
                      ) -> tuple[AgentServer, int]:
    """An agent for `node` (certificate from the cluster CA, or the one in `ca_dir`) and its
    registered Node."""
    cert = pki.issue_agent_cert(ca_dir or server.data_dir, workdir / node, node_name=node,
                                addresses=["127.0.0.1"])
    agent, port = await serve_agent(build_agent_app(runtime, token=token), host="127.0.0.1",
                                    port=0, cert=cert.cert, key=cert.key)
    with server.client() as api:
        r = api.post("/api/v1/nodes", json={
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": node}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
        assert r.status_code == 201, r.text
        if not r.json().get("status", {}).get("daemonEndpoints"):
            status = {**r.json(), "status": r.json().get("status") or {}}
            status["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
            assert api.put(f"/api/v1/nodes/{node}/status", json=status).status_code == 200
    return agent, port


def make_pod(server: ServerProcess, name: str, containers: list[str], node: str = "") -> str:
    """A pod (bound to `node` and Running when given); its uid."""
    with server.client() as api:
        spec: dict = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
        if node:
            spec["nodeName"] = node
        r = api.post(PODS, json={"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": name}, "spec": spec})
        assert r.status_code == 201, r.text
        if node:
            pod = r.json()
            pod["status"] = {"phase": "Running", "containerStatuses": [
                {"name": c, "ready": True, "restartCount": 0, "image": "busybox",
                 "imageID": "", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
                for c in containers]}
            assert api.put(f"{PODS}/{name}/status", json=pod).status_code == 200
        return r.json()["metadata"]["uid"]


@pytest.fixture
async def cluster(server: ServerProcess, tmp_path: Path) -> AsyncIterator[Cluster]:
    runtime = FakeExecRuntime()
    token = pki.load_kubelet_client_token(server.data_dir)
    agent, port = await start_agent(server, runtime, tmp_path, "node-a", token)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    # web: one container, restarted once (attempt 0 exited, attempt 1 running)
    uid = make_pod(server, "web", ["app"], "node-a")
    append(logdir / "web-0.log", record("first life", ago=60))
    runtime.add("default", "web", "app", attempt=0, log_path=logdir / "web-0.log",
                state=ContainerState.EXITED, uid=uid)
    append(logdir / "web-1.log", record("old news", ago=3600), record("line 2", ago=5),
           record("line 3", ago=4, stream="stderr"), record("line 4", ago=3))
    runtime.add("default", "web", "app", attempt=1, log_path=logdir / "web-1.log", uid=uid)
    # duo: two containers
    uid = make_pod(server, "duo", ["a", "b"], "node-a")
    for c in ("a", "b"):
        append(logdir / f"duo-{c}.log", record(f"from {c}"))
        runtime.add("default", "duo", c, log_path=logdir / f"duo-{c}.log", uid=uid)
    try:
        yield Cluster(server, runtime, logdir, port)
    finally:
        for session in runtime.sessions:
            await session.kill()
        await agent.stop()


async def test_kubectl_logs_with_options(cluster: Cluster) -> None:
    out = await cluster.kubectl("logs", "web")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "old news\nline 2\nline 3\nline 4\n"  # stdout and stderr, in order
    assert (await cluster.kubectl("logs", "web", "--tail", "2")).stdout == "line 3\nline 4\n"
    assert (await cluster.kubectl("logs", "web", "--since", "10s")).stdout == \
        "line 2\nline 3\nline 4\n"
    assert (await cluster.kubectl("logs", "web", "--limit-bytes", "9")).stdout == "old news\n"
    stamped = (await cluster.kubectl("logs", "web", "--tail", "1", "--timestamps")).stdout
    stamp, _, text = stamped.partition(" ")
    assert text == "line 4\n"
    assert datetime.fromisoformat(stamp[:26] + "+00:00") > datetime.now(UTC) - timedelta(
        minutes=1) and stamp.endswith("Z") and len(stamp) == len("2024-01-01T00:00:00.") + 10
    assert (await cluster.kubectl("logs", "web", "--previous")).stdout == "first life\n"
    assert (await cluster.kubectl("logs", "duo", "-c", "b")).stdout == "from b\n"


async def test_kubectl_logs_follow_streams_until_the_container_exits(cluster: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.server.kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "logs", "-f", "web", "--tail", "1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"line 4\n"
    append(cluster.logs / "web-1.log", record("live 1"))
    assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"live 1\n"
    append(cluster.logs / "web-1.log", record("live 2"), record("last words"))
    cluster.runtime.set_state("web-app-1", ContainerState.EXITED)
    rest = await asyncio.wait_for(proc.stdout.read(), 10)  # ends by itself
    assert rest == b"live 2\nlast words\n"
    assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_a_client_that_goes_away_stops_the_agents_work(cluster: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.server.kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "logs", "-f", "duo", "-c", "a", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"from a\n"
    assert logs._watchers  # the agent is following the file
    proc.terminate()
    await proc.wait()
    for _ in range(100):  # the API server closes its upstream; the agent stops reading
        if not logs._watchers:
            break
        await asyncio.sleep(0.05)
    assert not logs._watchers
    # The same for exec: kubectl goes away, the command in the container is killed.
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "exec", "web", "--", "sh", "-c", "echo started; exec sleep 60",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"started\n"
    proc.kill()
    await proc.wait()
    await asyncio.wait_for(cluster.runtime.sessions[-1].proc.wait(), 5)


async def test_kubectl_exec(cluster: Cluster) -> None:
    out = await cluster.kubectl("exec", "web", "--", "echo", "hi")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    out = await cluster.kubectl("exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3
    assert out.stdout == "out\n"
    assert "err\n" in out.stderr and "command terminated with exit code 3" in out.stderr
    out = await cluster.kubectl("exec", "-i", "web", "--", "cat", input="hello\nworld\n")
    assert (out.returncode, out.stdout) == (0, "hello\nworld\n"), out.stderr
    out = await cluster.kubectl("exec", "duo", "-c", "b", "--", "echo", "in b")
    assert out.stdout == "in b\n"
    out = await cluster.kubectl("exec", "duo", "--", "true")  # kubectl picks the first one
    assert out.returncode == 0 and 'Defaulted container "a" out of: a, b' in out.stderr
    out = await cluster.kubectl("exec", "web", "--", "no-such-command")
    assert out.returncode != 0
    assert 'exec: "no-such-command": executable file not found in $PATH' in out.stderr

    # The official Python client's exec (kubernetes.stream) speaks the same protocol.
    from kubernetes import client, config
    from kubernetes.stream import stream

    def python_client_exec() -> str:
        api = client.CoreV1Api(config.new_client_from_config(str(cluster.server.kubeconfig)))
        return stream(api.connect_get_namespaced_pod_exec, "web", "default",
                      command=["sh", "-c", "echo py; echo e >&2"], stdout=True, stderr=True,
                      stdin=False, tty=False)

    assert await asyncio.to_thread(python_client_exec) == "py\ne\n"


async def test_kubectl_exec_with_a_terminal(cluster: Cluster) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.server.kubeconfig), "TERM": "dumb"}
    argv = [kubectl_binary(), "exec", "-it", "web", "--", "sh", "-c",
            "sleep 0.5; tty; stty size; exit 7"]
    code, output = await asyncio.to_thread(run_in_terminal, argv, env, rows=33, cols=101)
    assert code == 7, output
    assert "/dev/pts/" in output  # the command has a terminal of its own ...
    assert "33 101" in output  # ... sized like kubectl's (the resize channel)
    assert cluster.runtime.sessions[-1].resizes[0] == (101, 33)
    # An interactive shell: what is typed reaches it, its exit code comes back.
    argv = [kubectl_binary(), "exec", "-it", "web", "--", "sh"]
    code, output = await asyncio.to_thread(run_in_terminal, argv, env, rows=24, cols=80,
                                           typed=b"echo $((6 * 7))\rexit 4\r")
    assert code == 4, output
    assert "42" in output


async def test_errors_users_see(cluster: Cluster, tmp_path: Path) -> None:
    server = cluster.server
    raw = await cluster.kubectl("get", "--raw", f"{PODS}/duo/log")
    assert "a container name must be specified for pod duo, choose one of: [a b]" in raw.stderr
    out = await cluster.kubectl("logs", "duo", "-c", "nope")
    assert out.returncode != 0 and "container nope is not valid for pod duo" in out.stderr
    out = await cluster.kubectl("exec", "duo", "-c", "nope", "--", "true")
    assert out.returncode != 0 and "container nope is not valid for pod duo" in out.stderr
    out = await cluster.kubectl("logs", "duo", "-c", "a", "--previous")
    assert 'previous terminated container "a" in pod "duo" not found' in out.stderr
    make_pod(server, "pending", ["app"])
    out = await cluster.kubectl("logs", "pending")
    assert "pod pending does not have a host assigned" in out.stderr
    with server.client() as api:  # a container the agent reports as not started yet
        pod = api.get(f"{PODS}/duo").json()
        pod["status"]["containerStatuses"][1]["state"] = {
            "waiting": {"reason": "ImagePullBackOff"}}
        assert api.put(f"{PODS}/duo/status", json=pod).status_code == 200
    out = await cluster.kubectl("logs", "duo", "-c", "b")
    assert 'container "b" in pod "duo" is waiting to start: trying and failing to pull image' \
        in out.stderr
    raw = await cluster.kubectl("get", "--raw", f"{PODS}/web/log?tailLines=-2")
    assert 'PodLogOptions "web" is invalid: tailLines: Invalid value: -2: must be greater ' \
        "than or equal to 0" in raw.stderr
    # exec into a container that is not running
    cluster.runtime.set_state("duo-b-0", ContainerState.EXITED)
    out = await cluster.kubectl("exec", "duo", "-c", "b", "--", "true")
    assert out.returncode != 0 and 'container "b" in pod "duo" is not running' in out.stderr

    # An agent that does not know the API server's token refuses it: 401, said plainly.
    wrong, _ = await start_agent(server, cluster.runtime, tmp_path, "node-b", "not-the-token")
    try:
        uid = make_pod(server, "elsewhere", ["app"], "node-b")
        cluster.runtime.add("default", "elsewhere", "app", log_path=cluster.logs / "x.log",
                            uid=uid)
        out = await cluster.kubectl("logs", "elsewhere")
        assert out.returncode != 0
        assert 'the node agent on node "node-b" refused the API server\'s credentials' in \
            out.stderr
        out = await cluster.kubectl("exec", "elsewhere", "--", "true")
        assert out.returncode != 0 and "refused the API server's credentials" in out.stderr
    finally:
        await wrong.stop()

    # An agent whose certificate another CA signed is not trusted.
    pki.ensure_pki(tmp_path / "other-cluster")
    stranger, _ = await start_agent(server, cluster.runtime, tmp_path, "node-c",
                                    pki.load_kubelet_client_token(server.data_dir),
                                    ca_dir=tmp_path / "other-cluster")
    try:
        make_pod(server, "impostor", ["app"], "node-c")
        out = await cluster.kubectl("logs", "impostor")
        assert 'the node agent on node "node-c" cannot be reached at 127.0.0.1:' in out.stderr
        assert "certificate verify failed" in out.stderr
    finally:
        await stranger.stop()


def test_agent_certificates_are_reused_until_their_names_change(tmp_path: Path) -> None:
    cluster = pki.ensure_pki(tmp_path)
    assert cluster.kubelet_client_token == pki.load_kubelet_client_token(tmp_path)
    assert pki.ensure_pki(tmp_path).kubelet_client_token == cluster.kubelet_client_token
    first = pki.issue_agent_cert(tmp_path, tmp_path / "a", node_name="n1",
                                 addresses=["10.0.0.5"])
    pem = first.cert.read_bytes()
    again = pki.issue_agent_cert(tmp_path, tmp_path / "a", node_name="n1",
                                 addresses=["10.0.0.5"])
    assert again.cert.read_bytes() == pem
    moved = pki.issue_agent_cert(tmp_path, tmp_path / "a", node_name="n1",
                                 addresses=["10.0.0.6"])
    cert = x509.load_pem_x509_certificate(moved.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.6") in names.get_values_for_type(x509.IPAddress)
    assert "n1" in names.get_values_for_type(x509.DNSName)
    assert oct(moved.key.stat().st_mode & 0o777) == "0o600"


async def test_the_agent_port_requires_the_token(cluster: Cluster) -> None:
    url = f"https://127.0.0.1:{cluster.agent_port}"
    token = pki.load_kubelet_client_token(cluster.server.data_dir)
    async with httpx.AsyncClient(verify=cluster.server.tls()) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await client.get(f"{url}/containerLogs/default/web/app", headers=headers)
            assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
        ok = await client.get(f"{url}/containerLogs/default/web/app?tailLines=1",
                              headers={"Authorization": f"Bearer {token}"})
        assert (ok.status_code, ok.text) == (200, "line 4\n")
        assert (await client.get(f"{url}/healthz",
                                 headers={"Authorization": f"Bearer {token}"})).text == "ok"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # no token, no upgrade
            await session.ws_connect(f"{url}/exec/default/web/app?command=true&stdout=true",
                                     protocols=[V5], ssl=cluster.server.tls())
        assert refused.value.status == 401


async def test_exec_frames_on_the_wire_through_the_api_server(cluster: Cluster) -> None:
    """channel.k8s.io as a client sees it: v4 and v5, stdin, its v5 CLOSE, exit Status."""
    exec_url = f"{cluster.server.url.replace('https', 'wss')}{PODS}/web/exec"
    auth = {"Authorization": f"Bearer {cluster.server.token}"}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{exec_url}?command=true&stdout=true", protocols=[V5],
                                     ssl=cluster.server.tls())
        assert refused.value.status == 401  # the API server checks WebSocket upgrades too

        async def run(protocol: str, command: list[str], frames: list[bytes] = (),
                      ) -> tuple[str | None, dict[int, bytes], dict, int | None]:
            params = [("command", c) for c in command] + [
                ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
            ws = await session.ws_connect(exec_url, params=params, protocols=[protocol],
                                          headers=auth, ssl=cluster.server.tls())
            for frame in frames:
                await ws.send_bytes(frame)
            got: dict[int, bytes] = {}
            async for message in ws:
                assert message.type == aiohttp.WSMsgType.BINARY
                got[message.data[0]] = got.get(message.data[0], b"") + message.data[1:]
            return ws.protocol, got, orjson.loads(got.pop(3)), ws.close_code

        protocol, got, status, close = await run(V5, ["cat"], [b"\x00hello", b"\xff\x00"])
        assert (protocol, got, status, close) == (V5, {1: b"hello"}, {
            "metadata": {}, "status": "Success"}, 1000)
        resize = b"\x04" + orjson.dumps({"Width": 9, "Height": 9})
        protocol, got, status, _ = await run(V4, ["sh", "-c", "read x; echo oops >&2; exit 5"],
                                             [resize, b"\x00go\n"])
        assert (protocol, got) == (V4, {2: b"oops\n"})
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
        assert cluster.runtime.sessions[-1].resizes == [(9, 9)]
