"""Watch: store events become Kubernetes watch events (ADDED, MODIFIED, DELETED, BOOKMARK).

A watch without a resourceVersion (or "0") first sends the current objects as ADDED, then
streams from the revision that list was read at. Objects entering or leaving a selector are
sent as ADDED and DELETED, as the real apiserver does. A watch from a revision the store no
longer retains ends with an ERROR event carrying a 410 `Status`, which clients relist on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from dockyard.api.resources import ResourceInfo
from dockyard.apiserver import errors
from dockyard.apiserver.codec import decode
from dockyard.apiserver.rest import Registry
from dockyard.apiserver.selectors import Matcher
from dockyard.store.interface import Compacted, Event

Obj = dict[str, Any]
BOOKMARK_SECONDS = 10.0


async def watch_events(
    registry: Registry,
    info: ResourceInfo,
    namespace: str | None,
    *,
    match: Matcher | None,
    resource_version: str,
    bookmarks: bool,
    timeout: float | None,
) -> AsyncIterator[tuple[str, Obj]]:
    """(type, object) pairs until `timeout` seconds pass or the server stops."""
    deadline = time.monotonic() + timeout if timeout else None
    if resource_version in ("", "0"):
        page = await registry.list(info, namespace, match=match)
        for obj in page.items:
            yield "ADDED", obj
        start = page.revision
    else:
        try:
            start = int(resource_version)
        except ValueError:
            raise errors.bad_request(
                f'invalid resource version "{resource_version}"') from None
    store = registry.store
    stream = store.watch(info.key_prefix(namespace), start, idle=_idle(deadline))
    try:
        async for event in stream:
            if event is None:
                if bookmarks:
                    yield "BOOKMARK", _bookmark(info, store.current_revision())
            elif translated := _translate(event, match):
                yield translated
            if deadline and time.monotonic() >= deadline:
                return
    except Compacted as exc:
        status = errors.gone(f"too old resource version: {start} ({exc.oldest})").status()
        yield "ERROR", status
    finally:
        await stream.aclose()


def _idle(deadline: float | None) -> float:
    if deadline is None:
        return BOOKMARK_SECONDS
    return max(0.05, min(BOOKMARK_SECONDS, deadline - time.monotonic()))


def _bookmark(info: ResourceInfo, revision: int) -> Obj:
    return {
        "kind": info.kind,
        "apiVersion": info.api_version,
        "metadata": {
            "resourceVersion": str(revision),
            "annotations": {"k8s.io/initial-events-end": "true"},
        },
    }


def _translate(event: Event, match: Matcher | None) -> tuple[str, Obj] | None:
    obj = decode(event.kv)
    now = match is None or match(obj)
    if event.type == "DELETE":
        return ("DELETED", obj) if now else None
    if event.kv.create_revision == event.kv.mod_revision:
        return ("ADDED", obj) if now else None
    if match is None or event.prev is None:
        return ("MODIFIED", obj) if now else None
    before = match(decode(event.prev))
    if now:
        return ("MODIFIED" if before else "ADDED", obj)
    return ("DELETED", obj) if before else None
