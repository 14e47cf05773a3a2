"""Docker's tables: `service ls`, `service ps`, `node ls`, laid out as its CLI lays them out
(Go's tabwriter with minimum width 10 and padding 3; the last column unpadded). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dockyard.cli.image import human_duration
from dockyard.cli.swarm.tasks import Task, now
from dockyard.runtime.imageref import InvalidReference, parse_reference

Obj = dict[str, Any]
MIN_WIDTH, PADDING = 10, 3
ERROR_WIDTH = 30


def familiar_image(image: str) -> str:
    """`nginx` → `nginx:latest`, as Docker shows images."""
    try:
        return parse_reference(image).familiar()
    except InvalidReference:
        return image


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Lines of a table; every cell but the last of a row is padded to its column."""
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(MIN_WIDTH, max(len(r[i]) for r in table) + PADDING)
              for i in range(len(headers) - 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines)


def truncate_id(full: str, no_trunc: bool = False) -> str:
    return full if no_trunc else full[:12]


def ago(when: datetime | None) -> str:
    if when is None:
        return ""
    return f"{human_duration(max(0.0, (now() - when).total_seconds()))} ago"


def current_state(task: Task) -> str:
    """`Running 5 seconds ago`."""
    return f"{task.state.capitalize()} {ago(task.since)}".rstrip()


def quoted_error(error: str, no_trunc: bool) -> str:
    if not error:
        return ""
    if not no_trunc and len(error) > ERROR_WIDTH:
        error = error[:ERROR_WIDTH - 1] + "…"
    return f'"{error}"'


SERVICE_HEADERS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS")
TASK_HEADERS = ("ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR",
                "PORTS")
NODE_HEADERS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION")


def task_rows(tasks: Sequence[Task], *, node_names: dict[str, str],
              no_trunc: bool = False) -> list[list[str]]:
    """`service ps` rows: the current task of a slot first, earlier ones as ` \\_ web.1`."""
    rows = []
    previous_name = None
    for task in tasks:
        for i, t in enumerate([task, *task.history]):
            history = i > 0 or t.name == previous_name
            rows.append([truncate_id(t.id, no_trunc),
                         f" \\_ {t.name}" if history else t.name, familiar_image(t.image),
                         node_names.get(t.node, t.node), t.desired, current_state(t),
                         quoted_error(t.error, no_trunc), ""])
        previous_name = task.name
    return rows
