"""The distributed store: `Store` over etcd's v3 API, through the JSON gateway etcd serves.

Why the gateway: Debian ships etcd 3.4, and the Python gRPC clients for it are unmaintained
(python-etcd3 pins old grpc/protobuf). etcd 3.4 serves every v3 call as JSON over HTTP
(`/v3/kv/range`, `/v3/kv/txn`, ...; keys and values base64), all through aiohttp. The watch is
a bidirectional stream: over plain HTTP/1.1 etcd's Go server answers only once the request
body has ended, so it goes over the WebSocket that the same gateway serves at `/v3/watch`
(one JSON request or response per message), where requests can follow the first one.

Semantics are etcd's own: a key's resourceVersion is its `mod_revision`; create is a txn on
`create_revision == 0`, update and delete a txn on `mod_revision == expected`; lists read a
consistent snapshot at a revision; compaction makes older revisions `Compacted` (410).

Watches work as the apiserver's watch cache does: one etcd watch over the whole key space of
this store feeds the same `WatchHub` the SQLite store uses, so a thousand API watchers cost
etcd one stream. The stream resumes from its last revision on the next member when a member
fails. `current_revision()` is the revision that stream has delivered up to, so an idle tick
("caught up to current_revision()") is always true; a write returns once the stream has
delivered it, so a caller sees `current_revision()` at least at its own write, as with SQLite.
To learn that the stream has caught up with revisions it has no events for (other clusters'
writes, or at start), the store writes a marker key inside its range and waits for its event:
etcd 3.4's progress responses cannot be used for that, they may overtake unsent events (fixed
in etcd 3.4.24/3.5.8), so here they only prove that the stream is alive.

Requests move to the next endpoint when a member is unreachable; a write whose outcome is
unknown is retried once and reconciled by comparing the value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from dockyard.store.interface import (
    Compacted,
    Event,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    StoreError,
)
from dockyard.store.watchhub import WatchHub

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
# Inside the store's key range, hidden from lists and watches; writing it and seeing its
# event proves the watch stream has delivered every revision before it.
_MARKER = "/\0dockyard-sync"
# hasleader: a member cut off from its leader refuses at once instead of timing out.
_HEADERS = {"Content-Type": "application/json", "Grpc-Metadata-hasleader": "true"}
_UNAVAILABLE = 14  # gRPC code: no leader, request timed out, leader changed, ...


def parse_etcd_url(datastore: str) -> tuple[list[str], str]:
    """`etcd://h1:2379,h2:2379[/prefix]` → (["http://h1:2379", ...], "/prefix")."""
    rest = datastore.split("://", 1)[1]
    hosts, _, path = rest.partition("/")
    endpoints = []
    for host in filter(None, hosts.split(",")):
        has_port = host.rsplit("]", 1)[-1].count(":") == 1
        endpoints.append(f"http://{host}" if has_port else f"http://{host}:{DEFAULT_PORT}")
    if not endpoints:
        raise ValueError(f"no etcd endpoint in {datastore!r}: use etcd://HOST:PORT[,HOST:PORT]")
    return endpoints, ("/" + path).rstrip("/") if path else ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key starting with `prefix` (etcd's range_end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class _Ambiguous(Exception):
    """A write reached a member that failed before answering: it may or may not have applied."""


class EtcdStore:
    """`Store` over an etcd cluster. Keys start with "/"; each is stored as `prefix + key`,
    so clusters with different prefixes (`/a`, `/b`) can share one etcd. Without a prefix the
    API server's keys are Kubernetes' own layout, `/registry/<group>/<resource>/...`."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        prefix: str = "",
        window: int = 20_000,
        request_timeout: float = 2.5,
        list_timeout: float = 60.0,
        retry_for: float = 15.0,
        ping_every: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0  # index of the member requests go to
        self._root = prefix.rstrip("/")
        self._space = (self._root + "/").encode()  # every etcd key of this store starts so
        self._window = window
        # A write forwarded to a leader that just died hangs until etcd's own 7 s timeout;
        # giving up sooner and retrying on another member (reconciled) is faster.
        self._request_timeout = request_timeout
        self._list_timeout = aiohttp.ClientTimeout(total=list_timeout, connect=1.0)
        self._retry_for = retry_for
        self._ping_every = ping_every
        self._session: aiohttp.ClientSession | None = None
        self._hub = WatchHub(window=window)
        self._synced = 0  # every event up to here has reached the hub: current_revision()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (revision, id, f)
        self._compacted = 0
        self._follower: asyncio.Task[None] | None = None
        self._syncing: asyncio.Task[int] | None = None
        self._closing = False

    @classmethod
    def from_url(cls, datastore: str, *, window: int = 20_000) -> EtcdStore:
        endpoints, prefix = parse_etcd_url(datastore)
        return cls(endpoints, prefix=prefix, window=window)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, replay the last `window` revisions into the watch window, catch up."""
        timeout = aiohttp.ClientTimeout(total=self._request_timeout, connect=1.0)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=64), json_serialize=None)
        try:
            # The newest key in range: when its revision is etcd's latest, its event is the
            # last the replay needs to deliver; otherwise a marker write finds the end.
            head = await self._post("/v3/kv/range", {
                "key": _b64(self._space), "range_end": _b64(_prefix_end(self._space)),
                "sort_order": "DESCEND", "sort_target": "MOD", "limit": 1, "keys_only": True,
            }, safe=True)
            latest = int(head["header"]["revision"])
            newest = int(head["kvs"][0]["mod_revision"]) if head.get("kvs") else 0
            self._synced = max(0, latest - self._window)
            self._hub.seed([], self._synced)
            self._follower = asyncio.create_task(self._follow_forever(), name="etcd-watch")
            if newest == latest:
                await self._delivered(latest, self._retry_for * 2)
            else:
                latest = await self._sync()
            if self._synced < latest:
                raise StoreError(f"etcd watch did not catch up to revision {latest}")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._closing = True
        for task in (self._syncing, self._follower):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await task
        self._hub.close_all()
        for _, _, waiter in self._waiters:
            waiter.cancel()
        if self._session:
            await self._session.close()

    # -- reads -----------------------------------------------------------------------------

    def current_revision(self) -> int:
        return self._synced

    async def get(self, key: str) -> KeyValue | None:
        reply = await self._post("/v3/kv/range", {"key": self._key(key)}, safe=True)
        kvs = reply.get("kvs")
        return self._kv(kvs[0]) if kvs else None

    async def list(
        self, prefix: str, *, limit: int = 0, start_after: str = "", revision: int = 0
    ) -> ListResult:
        if start_after and start_after >= prefix:
            first = (self._root + start_after).encode() + b"\0"
        else:
            first = (self._root + prefix).encode()
        end = _prefix_end((self._root + prefix).encode())
        body: dict[str, Any] = {  # never outside this store's keys, whatever the prefix
            "key": _b64(max(first, self._space)),
            "range_end": _b64(min(end, _prefix_end(self._space))),
        }
        if limit:
            body["limit"] = limit
        if revision:
            body["revision"] = revision
        reply = await self._post("/v3/kv/range", body, safe=True, timeout=self._list_timeout)
        items = [kv for kv in map(self._kv, reply.get("kvs", ())) if kv.key != _MARKER]
        read_at = revision or int(reply["header"]["revision"])
        return ListResult(items, read_at, bool(reply.get("more")))

    # -- writes ----------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        k = self._key(key)
        txn = {
            "compare": [{"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": k, "value": _b64(value)}}],
            "failure": [{"request_range": {"key": k}}],
        }
        reply, ambiguous = await self._txn(txn)
        if reply.get("succeeded"):
            revision = await self._delivered(int(reply["header"]["revision"]))
            return KeyValue(key, value, revision, revision)
        current = self._txn_current(reply)
        if ambiguous and current is not None and current.value == value:
            await self._delivered(current.mod_revision)
            return current  # our first attempt applied
        raise KeyExists(key)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        k = self._key(key)
        txn = {
            "compare": [self._guard(k, expected_revision)],
            "success": [{"request_put": {"key": k, "value": _b64(value), "prev_kv": True}}],
            "failure": [{"request_range": {"key": k}}],
        }
        reply, ambiguous = await self._txn(txn)
        if reply.get("succeeded"):
            prev = reply["responses"][0]["response_put"].get("prev_kv")
            revision = await self._delivered(int(reply["header"]["revision"]))
            created = int(prev["create_revision"]) if prev else revision
            return KeyValue(key, value, created, revision)
        current = self._txn_current(reply)
        if current is None:
            raise KeyNotFound(key)
        if ambiguous and current.value == value:
            await self._delivered(current.mod_revision)
            return current
        raise RevisionMismatch(current)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        k = self._key(key)
        txn = {
            "compare": [self._guard(k, expected_revision)],
            "success": [{"request_delete_range": {"key": k, "prev_kv": True}}],
            "failure": [{"request_range": {"key": k}}],
        }
        reply, _ambiguous = await self._txn(txn)
        if reply.get("succeeded"):
            prevs = reply["responses"][0]["response_delete_range"].get("prev_kvs")
            if not prevs:  # deleted by someone else between compare and delete: impossible
                raise KeyNotFound(key)  # in one txn, but never answer with no value
            prev = self._kv(prevs[0])
            return KeyValue(key, prev.value, prev.create_revision, await self._delivered(
                int(reply["header"]["revision"])))
        current = self._txn_current(reply)
        if current is None:
            raise KeyNotFound(key)
        raise RevisionMismatch(current)

    @staticmethod
    def _guard(key: str, expected_revision: int) -> dict[str, Any]:
        if expected_revision:
            return {"target": "MOD", "key": key, "result": "EQUAL",
                    "mod_revision": expected_revision}
        return {"target": "CREATE", "key": key, "result": "GREATER", "create_revision": 0}

    def _txn_current(self, reply: dict[str, Any]) -> KeyValue | None:
        kvs = reply["responses"][0]["response_range"].get("kvs")
        return self._kv(kvs[0]) if kvs else None

    async def _delivered(self, revision: int, timeout: float | None = None) -> int:
        """`revision` (a write's), once the watch stream has delivered it to the hub."""
        if revision > self._synced:
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (revision, id(future), future))
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout or self._request_timeout)
            except TimeoutError:  # the stream is reconnecting; the write itself is done
                log.warning("etcd watch has not delivered revision %d yet", revision)
        return revision

    async def _sync(self) -> int:
        """Write the marker and wait for its event: the stream is then current to it."""
        reply = await self._post("/v3/kv/put", {"key": self._key(_MARKER)}, safe=True)
        return await self._delivered(int(reply["header"]["revision"]), self._retry_for)

    def _sync_soon(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync_quietly(), name="etcd-sync")

    async def _sync_quietly(self) -> int:
        try:
            return await self._sync()
        except StoreError as exc:  # the next idle tick asks again
            log.warning("etcd sync marker failed: %s", exc)
            return 0

    async def _txn(self, txn: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Run a txn; (reply, True) when an earlier attempt may have applied already."""
        try:
            return await self._post("/v3/kv/txn", txn, safe=False), False
        except _Ambiguous as exc:
            log.warning("etcd write outcome unknown (%s); retrying on another member", exc)
            return await self._post("/v3/kv/txn", txn, safe=True), True

    # -- watch and compaction --------------------------------------------------------------

    def watch(
        self, prefix: str, start_revision: int, idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        return self._watch(prefix, start_revision, idle)

    async def _watch(
        self, prefix: str, start_revision: int, idle: float | None
    ) -> AsyncIterator[Event | None]:
        stream = self._hub.watch(prefix, start_revision, idle)
        try:
            async for item in stream:
                if item is None:
                    if self._synced < start_revision:
                        # Started from a list read ahead of the stream: a tick now would
                        # carry a revision older than the one the caller already has.
                        self._sync_soon()
                        continue
                elif item.kv.mod_revision <= start_revision:
                    continue  # that list already covered it
                yield item
        finally:
            await stream.aclose()

    async def compact(self, revision: int) -> None:
        """Compact etcd's history at `revision` (another server may have compacted further)."""
        revision = min(revision, self._synced)
        if revision <= self._compacted:
            return
        with contextlib.suppress(Compacted):
            await self._post("/v3/kv/compaction", {"revision": revision}, safe=True)
        self._compacted = revision
        self._hub.compact(revision)

    # -- the watch stream that feeds the hub -----------------------------------------------

    async def _follow_forever(self) -> None:
        delay = 0.05
        while not self._closing:
            url = self._endpoints[self._current]
            try:
                await self._follow(url)
                delay = 0.05
            except Exception as exc:  # noqa: BLE001 - never stop following; say why
                log.warning("etcd watch on %s ended (%s); resuming from revision %d",
                            url, repr(exc), self._synced + 1)
                self._fail_over(url)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _follow(self, url: str) -> None:
        """One watch stream from `_synced + 1` until it fails (raises) or needs a restart."""
        assert self._session is not None
        ws = await self._session.ws_connect(
            url + "/v3/watch", timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            max_msg_size=0, autoping=True,
            # Cancel the watch when this member loses its leader, so we move to another.
            headers={"Grpc-Metadata-hasleader": "true"})
        stream = _WatchStream(ws)
        pinger: asyncio.Task[None] | None = None
        try:
            await stream.send({"create_request": {
                "key": _b64(self._space), "range_end": _b64(_prefix_end(self._space)),
                "start_revision": self._synced + 1,
                "prev_kv": True,
            }})
            pinger = asyncio.create_task(self._ping(stream), name="etcd-watch-ping")
            async for message in stream.messages():
                if not self._on_message(message):
                    return
            raise EOFError("watch stream closed")
        finally:
            if pinger:
                pinger.cancel()
            await ws.close()

    def _on_message(self, message: dict[str, Any]) -> bool:
        """Apply one watch response; False when the stream must be reopened."""
        result = message.get("result")
        if result is None:
            raise StoreError(f"etcd watch error: {message.get('error', message)}")
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:  # history we had not seen is gone: watchers must relist
                self._gap(compacted)
                return False
            raise StoreError(f"etcd watch canceled: {result.get('cancel_reason', '')}")
        events = result.get("events")
        if events:
            batch = []
            for raw in events:
                event = self._event(raw)
                if event is None:
                    self._gap(int(raw["kv"]["mod_revision"]))
                    batch = []
                elif event.kv.key != _MARKER:
                    batch.append(event)
            self._hub.publish(batch)
            self._advance(int(events[-1]["kv"]["mod_revision"]))
        return True  # created, or a progress response (liveness only, see the docstring)

    def _event(self, raw: dict[str, Any]) -> Event | None:
        kv = self._kv(raw["kv"])
        prev = self._kv(raw["prev_kv"]) if raw.get("prev_kv") else None
        if raw.get("type") != "DELETE":
            return Event("PUT", kv, prev)
        if prev is None:
            return None  # the deleted value was compacted away: cannot be told to watchers
        return Event("DELETE", KeyValue(kv.key, prev.value, prev.create_revision,
                                        kv.mod_revision), prev)

    def _gap(self, floor: int) -> None:
        """Events at or below `floor` were lost: end every watcher, restart the window there."""
        log.warning("etcd history compacted at %d before the store saw it; watchers restart",
                    floor)
        old, self._hub = self._hub, WatchHub(window=self._window)
        self._hub.seed([], floor)
        old.close_all()
        self._compacted = max(self._compacted, floor)
        self._advance(floor)

    def _advance(self, revision: int) -> None:
        if revision > self._synced:
            self._synced = revision
            while self._waiters and self._waiters[0][0] <= revision:
                future = heapq.heappop(self._waiters)[2]
                if not future.done():
                    future.set_result(None)

    async def _ping(self, stream: _WatchStream) -> None:
        """Progress requests as a liveness check: etcd answers each one at once."""
        while True:
            await asyncio.sleep(self._ping_every)
            if time.monotonic() - stream.last_message > 3 * self._ping_every:
                log.warning("etcd watch stream silent; reconnecting")
                await stream.close()  # the reader sees the end and the stream is reopened
                return
            await stream.send({"progress_request": {}})

    # -- requests with fail-over -----------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], *, safe: bool,
                    timeout: aiohttp.ClientTimeout | None = None) -> dict[str, Any]:
        """POST to the current member; on failure move to the next one and retry for a while.

        `safe`: the request may be repeated. Unsafe requests (writes) raise `_Ambiguous` when
        they may have reached a member, instead of being repeated blindly.
        """
        assert self._session is not None, "EtcdStore.start() was not awaited"
        data = orjson.dumps(body)
        deadline = time.monotonic() + self._retry_for
        delay, last = 0.02, ""
        while True:
            url = self._endpoints[self._current]
            try:
                async with self._session.post(url + path, data=data, headers=_HEADERS,
                                              timeout=timeout or self._session.timeout) as resp:
                    status, raw = resp.status, await resp.read()
            except aiohttp.ClientConnectorError as exc:  # never sent
                last = f"{url}: {exc}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not safe:
                    self._fail_over(url)
                    raise _Ambiguous(f"{url}: {str(exc) or type(exc).__name__}") from exc
                last = f"{url}: {str(exc) or type(exc).__name__}"
            else:
                reply = orjson.loads(raw) if raw else {}
                if status == 200:
                    return reply
                message = str(reply.get("message") or reply.get("error") or raw[:200])
                if "compacted" in message:
                    raise Compacted(int(body.get("revision", 0)), self._compacted)
                if reply.get("code") != _UNAVAILABLE and status != 503:
                    raise StoreError(f"etcd {path}: {message}")
                if not safe and "no leader" not in message:
                    self._fail_over(url)
                    raise _Ambiguous(f"{url}: {message}")
                last = f"{url}: {message}"
            self._fail_over(url)
            if time.monotonic() >= deadline:
                raise StoreError(f"etcd unavailable at {', '.join(self._endpoints)}: {last}")
            if self._current == 0:  # tried every member once: back off before the next round
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _fail_over(self, url: str) -> None:
        if self._endpoints[self._current] == url:
            self._current = (self._current + 1) % len(self._endpoints)

    # -- keys ------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return _b64((self._root + key).encode())

    def _kv(self, raw: dict[str, Any]) -> KeyValue:
        key = base64.b64decode(raw["key"]).decode()[len(self._root):]
        return KeyValue(key, base64.b64decode(raw.get("value", "")),
                        int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)))


class _WatchStream:
    """The `/v3/watch` WebSocket: one JSON request or response per text message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.last_message = time.monotonic()

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send_bytes(orjson.dumps(message))

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        async for frame in self._ws:
            if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.last_message = time.monotonic()
                yield orjson.loads(frame.data)
            elif frame.type == aiohttp.WSMsgType.ERROR:
                raise OSError(f"etcd watch stream failed: {self._ws.exception()}")

    async def close(self) -> None:
        await self._ws.close()
