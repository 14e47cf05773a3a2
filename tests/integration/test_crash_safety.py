"""A write acknowledged with 201 survives `kill -9` of the server; a refused write is never
stored, even half."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.conftest import ServerProcess


def configmap(i: int) -> dict:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
          "data": {"index": str(i)}}
    if i % 10 == 0:
        cm["data"] = {"bad key!": "x"}  # invalid: must be refused with 422
    return cm


async def create_all(server: ServerProcess, total: int, kill_after: int) -> dict[int, object]:
    """Fire `total` concurrent creates; SIGKILL the server once `kill_after` were answered."""
    outcome: dict[int, object] = {}
    answered = asyncio.Event()
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, verify=server.tls(), limits=limits,
                                 headers={"Authorization": f"Bearer {server.token}"},
                                 timeout=10) as client:

        async def one(i: int) -> None:
            try:
                r = await client.post("/api/v1/namespaces/default/configmaps", json=configmap(i))
                outcome[i] = r.status_code
            except httpx.HTTPError as exc:
                outcome[i] = exc  # no answer: the outcome is unknown to the client
            if sum(1 for v in outcome.values() if v == 201) >= kill_after:
                answered.set()

        async def killer() -> None:
            await answered.wait()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)

        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(one(i) for i in range(total)))
        if not answered.is_set():
            answered.set()
        await kill_task
    return outcome


def test_acknowledged_creates_survive_kill_9(server: ServerProcess) -> None:
    outcome = asyncio.run(create_all(server, total=200, kill_after=60))
    server.proc.wait()  # type: ignore[union-attr]
    acknowledged = {i for i, v in outcome.items() if v == 201}
    refused = {i for i, v in outcome.items() if isinstance(v, int) and v != 201}
    assert len(acknowledged) >= 60
    assert refused and all(outcome[i] == 422 for i in refused)

    server.start()
    with server.client() as client:
        items = client.get("/api/v1/namespaces/default/configmaps").json()["items"]
    present = {int(item["metadata"]["name"].split("-")[1]) for item in items}
    assert acknowledged <= present, f"lost acknowledged writes: {acknowledged - present}"
    assert not (refused & present), f"refused writes stored: {refused & present}"
    for item in items:  # nothing half-written
        i = int(item["metadata"]["name"].split("-")[1])
        assert item["data"] == {"index": str(i)}
