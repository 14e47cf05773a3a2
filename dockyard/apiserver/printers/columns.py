"""Column specs and the `Printer` record: what a kind's table looks like and how a row is made.

Descriptions are the first sentence of the Go printers' `SwaggerDoc()` lookups (kubectl never
shows them), or the literal strings printers.go uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Cells = Callable[[dict[str, Any], datetime], list[Any]]
Conditions = Callable[[dict[str, Any]], list[dict[str, str]] | None]


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0  # 1: shown by kubectl only with `-o wide`
    format: str = ""

    def definition(self) -> dict[str, Any]:
        # TableColumnDefinition has no omitempty fields: all five are always present.
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    cells: Cells
    conditions: Conditions | None = None


def wide(name: str, description: str, type: str = "string") -> Column:
    return Column(name, type, description, priority=1)


NAME = Column(
    "Name",
    description="Name must be unique within a namespace.",
    format="name",
)
AGE = Column(
    "Age",
    description="CreationTimestamp is a timestamp representing the server time when this "
    "object was created.",
)
CONTAINERS = wide("Containers", "Names of each container in the template.")
IMAGES = wide("Images", "Images referenced by each container in the template.")
