"""The key-value store behind the API server; `open_store` picks the implementation by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from dockyard.store.interface import Store


def open_store(datastore: str, *, data_dir: Path, watch_window: int = 20_000) -> Store:
    """`sqlite:///abs/path.db`, `sqlite://` (DATA_DIR/state.db), a bare path, or
    `etcd://h1:2379,h2:2379[/prefix]` (etcd members; keys under `/prefix` if given)."""
    url = urlparse(datastore) if "://" in datastore else None
    if url is None:
        from dockyard.store.sqlite import SQLiteStore

        return SQLiteStore(datastore, window=watch_window)
    if url.scheme == "sqlite":
        from dockyard.store.sqlite import SQLiteStore

        return SQLiteStore(url.path or data_dir / "state.db", window=watch_window)
    if url.scheme == "etcd":
        from dockyard.store.etcd import EtcdStore

        return EtcdStore.from_url(datastore, window=watch_window)
    raise ValueError(
        f"unsupported datastore {datastore!r}: use sqlite:///PATH or etcd://HOST:PORT[,...]")
