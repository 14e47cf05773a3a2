"""Server-side printers: per-kind table columns and cells, ported from Kubernetes' printers.go.

`printer_for(group, kind)` returns the kind's `Printer`, or the default Name/Age one.
"""

from __future__ import annotations

from dockyard.apiserver.printers.columns import Column, Printer
from dockyard.apiserver.printers.kinds import DEFAULT, PRINTERS
from dockyard.apiserver.printers.pods import POD

_ALL: dict[tuple[str, str], Printer] = {("", "Pod"): POD, **PRINTERS}


def printer_for(group: str, kind: str) -> Printer:
    return _ALL.get((group, kind), DEFAULT)


__all__ = ["Column", "Printer", "printer_for"]
