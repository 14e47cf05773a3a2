"""The embedded store: an append-only revision log in SQLite (WAL), after kine's design.

Every write appends a row whose id is the new revision; a delete appends a tombstone carrying
the last value. Writes from concurrent requests are group-committed: one transaction and one
fsync (`synchronous=FULL`) per batch, and no caller is answered before its batch is durable.
The latest value of every key is also held in memory, so reads and first list pages never touch
the disk; paginated lists at an older revision read the log.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sortedcontainers import SortedDict

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,            -- the revision of this write
    key TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,    -- mod revision this write replaced (0: none)
    deleted INTEGER NOT NULL DEFAULT 0,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_key_id ON kv (key, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(slots=True)
class _Write:
    """One requested write, decided against the latest state when its batch is formed."""

    kind: str  # "create" | "update" | "delete"
    key: str
    value: bytes
    expected_revision: int
    future: asyncio.Future[KeyValue]


class SQLiteStore:
    """`Store` over one SQLite file. Loop-thread state; disk I/O runs in a worker thread.

    One process owns the file, and one writer task decides every compare-and-swap in order,
    so the checks need no database constraint.
    """

    def __init__(self, path: str | Path, *, window: int = 20_000) -> None:
        self._path = str(path)
        self._latest: SortedDict = SortedDict()  # key -> KeyValue
        self._revision = 0
        self._compacted = 0
        self._hub = WatchHub(window=window)
        self._pending: list[_Write] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    def _open(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power
        # loss, not only a process crash. Group commit keeps that to one fsync per batch.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        self._reader = sqlite3.connect(self._path, check_same_thread=False)
        self._reader.execute("PRAGMA query_only=1")
        row = db.execute("SELECT value FROM meta WHERE name='compact_revision'").fetchone()
        self._compacted = row[0] if row else 0
        self._revision = db.execute("SELECT COALESCE(MAX(id), 0) FROM kv").fetchone()[0]
        self._revision = max(self._revision, self._compacted)
        latest = db.execute(
            "SELECT kv.key, kv.value, kv.create_revision, kv.id FROM kv"
            " JOIN (SELECT MAX(id) AS id FROM kv GROUP BY key) m ON kv.id = m.id"
            " WHERE kv.deleted = 0"
        )
        for key, value, created, modified in latest:
            self._latest[key] = KeyValue(key, value, created, modified)
        window = self._hub._events.maxlen or 0
        floor = max(self._compacted, self._revision - window)
        events = [
            self._row_event(row)
            for row in db.execute(
                "SELECT key, value, create_revision, id, deleted, prev_revision FROM kv"
                " WHERE id > ? ORDER BY id",
                (floor,),
            )
        ]
        self._hub.seed(events, floor)

    @staticmethod
    def _row_event(row: tuple) -> Event:
        key, value, created, revision, deleted, _prev = row
        kv = KeyValue(key, value, created, revision)
        return Event("DELETE" if deleted else "PUT", kv)

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._writer:
            await self._writer
        self._hub.close_all()
        for conn in (self._db, self._reader):
            if conn:
                conn.close()

    # -- reads -----------------------------------------------------------------------------

    def current_revision(self) -> int:
        return self._revision

    async def get(self, key: str) -> KeyValue | None:
        return self._latest.get(key)

    async def list(
        self, prefix: str, *, limit: int = 0, start_after: str = "", revision: int = 0
    ) -> ListResult:
        if revision and revision != self._revision:
            if revision < self._compacted:
                raise Compacted(revision, self._compacted)
            return await asyncio.to_thread(self._list_at, prefix, limit, start_after, revision)
        lo = max(prefix, start_after)
        keys = self._latest.irange(lo, prefix + "\uffff", inclusive=(lo != start_after, False))
        items: list[KeyValue] = []
        for key in keys:
            if limit and len(items) == limit:
                return ListResult(items, self._revision, True)
            items.append(self._latest[key])
        return ListResult(items, self._revision, False)

    def _list_at(self, prefix: str, limit: int, start_after: str, revision: int) -> ListResult:
        assert self._reader is not None
        lo = max(prefix, start_after)
        op = ">" if start_after and start_after >= prefix else ">="
        sql = (
            "SELECT kv.key, kv.value, kv.create_revision, kv.id FROM kv"
            " JOIN (SELECT MAX(id) AS id FROM kv"
            f"       WHERE key {op} ? AND key < ? AND id <= ? GROUP BY key) m"
            " ON kv.id = m.id WHERE kv.deleted = 0 ORDER BY kv.key"
        )
        params: list[object] = [lo, prefix + "\uffff", revision]
        if limit:
            sql += " LIMIT ?"
            params.append(limit + 1)
        with self._reader_lock:
            rows = self._reader.execute(sql, params).fetchall()
        items = [KeyValue(k, v, c, m) for k, v, c, m in rows]
        more = bool(limit) and len(items) > limit
        return ListResult(items[:limit] if limit else items, revision, more)

    # -- writes ----------------------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> KeyValue:
        return await self._submit("create", key, value, 0)

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        return await self._submit("update", key, value, expected_revision)

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        return await self._submit("delete", key, b"", expected_revision)

    async def _submit(self, kind: str, key: str, value: bytes, expected: int) -> KeyValue:
        if self._closing:
            raise StoreError("store is closing")
        future: asyncio.Future[KeyValue] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(kind, key, value, expected, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)
            elif self._closing:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        """Decide each write against the latest state, persist the batch, then answer."""
        overlay: dict[str, KeyValue | None] = {}
        rows: list[tuple] = []
        events: list[Event] = []
        answers: list[tuple[_Write, KeyValue | StoreError]] = []
        revision = self._revision
        for write in batch:
            current = overlay[write.key] if write.key in overlay else self._latest.get(write.key)
            error = _check(write, current)
            if error:
                answers.append((write, error))
                continue
            revision += 1
            prev_rev = current.mod_revision if current else 0
            if write.kind == "delete":
                assert current is not None
                kv = KeyValue(write.key, current.value, current.create_revision, revision)
                overlay[write.key] = None
                rows.append((revision, write.key, kv.create_revision, prev_rev, 1, kv.value))
                events.append(Event("DELETE", kv, current))
            else:
                created = current.create_revision if current else revision
                kv = KeyValue(write.key, write.value, created, revision)
                overlay[write.key] = kv
                rows.append((revision, write.key, created, prev_rev, 0, write.value))
                events.append(Event("PUT", kv, current))
            answers.append((write, kv))
        if rows:
            try:
                await asyncio.to_thread(self._persist, rows)
            except Exception as exc:  # nothing of the batch is stored or visible
                for write in batch:
                    if not write.future.done():
                        write.future.set_exception(StoreError(f"write failed: {exc}"))
                return
        for key, kv in overlay.items():
            if kv is None:
                self._latest.pop(key, None)
            else:
                self._latest[key] = kv
        self._revision = revision
        self._hub.publish(events)
        for write, answer in answers:
            if write.future.done():
                continue
            if isinstance(answer, StoreError):
                write.future.set_exception(answer)
            else:
                write.future.set_result(answer)

    def _persist(self, rows: list[tuple]) -> None:
        assert self._db is not None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO kv (id, key, create_revision, prev_revision, deleted, value)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # -- watch and compaction --------------------------------------------------------------

    def watch(
        self, prefix: str, start_revision: int, idle: float | None = None
    ) -> AsyncIterator[Event | None]:
        return self._hub.watch(prefix, start_revision, idle)

    async def compact(self, revision: int) -> None:
        """Forget history at or below `revision` (latest values are always kept)."""
        revision = min(revision, self._revision)
        if revision <= self._compacted:
            return
        await asyncio.to_thread(self._compact_rows, revision)
        self._compacted = revision
        self._hub.compact(revision)

    def _compact_rows(self, revision: int) -> None:
        # Its own connection: the writer thread may be committing a batch at the same time.
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "DELETE FROM kv WHERE id <= ? AND (deleted = 1 OR id < "
                "(SELECT MAX(k2.id) FROM kv k2 WHERE k2.key = kv.key AND k2.id <= ?))",
                (revision, revision),
            )
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('compact_revision', ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (revision,),
            )
            db.execute("COMMIT")
        finally:
            db.close()


def _check(write: _Write, current: KeyValue | None) -> StoreError | None:
    """Compare-and-swap: why this write may not apply to `current`, or None."""
    if write.kind == "create":
        return KeyExists(write.key) if current else None
    if current is None:
        return KeyNotFound(write.key)
    if write.expected_revision and write.expected_revision != current.mod_revision:
        return RevisionMismatch(current)
    return None
