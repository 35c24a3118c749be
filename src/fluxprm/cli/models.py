"""``fluxprm models``: the registry of PRMs known by name."""

from __future__ import annotations

import shutil

__all__ = ["models"]


def models() -> None:
    """List the PRMs fluxprm knows by name, with their formats and where they come from."""
    from rich.console import Console
    from rich.table import Table

    from fluxprm.models.registry import REGISTRY

    table = Table(show_header=True, header_style="bold")
    for col in ("name", "format", "source", "description"):
        table.add_column(col)
    for e in REGISTRY.values():
        table.add_row(e.name, e.format, e.hub_id or f"bundled:{e.bundled}", e.description)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)
