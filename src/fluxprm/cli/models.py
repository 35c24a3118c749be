"""``fluxprm models``: the registry of PRMs known by name."""

from __future__ import annotations

import shutil
import textwrap

__all__ = ["models"]

_GAP = "  "
_INDENT = "    "
_MIN_DESCRIPTION = 30  # narrower than this, a description column is a ribbon of broken words


def models() -> None:
    """List the PRMs fluxprm knows by name, with their formats and where they come from."""
    from fluxprm.models.registry import REGISTRY

    rows = [(e.name, e.format, e.hub_id or f"bundled:{e.bundled}", e.description) for e in REGISTRY.values()]
    print(registry_table(rows, shutil.get_terminal_size((80, 24)).columns))


def registry_table(rows: list[tuple[str, str, str, str]], width: int) -> str:
    """The rows as plain columns within ``width``, never cut (names and hub ids are copied from here).

    Where the description has no room beside name, format and source, it goes, wrapped, under its row.
    """
    header = ("name", "format", "source", "description")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(3)]
    room = width - sum(widths) - 3 * len(_GAP)

    def line(cells: tuple[str, ...]) -> str:
        return "".join(c.ljust(w) + _GAP for c, w in zip(cells, widths))

    out: list[str] = []
    if room >= _MIN_DESCRIPTION:
        out.append(line(header[:3]) + header[3])
        for *cells, description in rows:
            wrapped = textwrap.wrap(description, room, break_on_hyphens=False) or [""]
            out.append(line(tuple(cells)) + wrapped[0])
            out += [" " * len(line(header[:3])) + more for more in wrapped[1:]]
        return "\n".join(out)
    out.append(line(header[:3]).rstrip())
    for *cells, description in rows:
        out.append(line(tuple(cells)).rstrip())
        out += textwrap.wrap(description, max(width - len(_INDENT), _MIN_DESCRIPTION), break_on_hyphens=False,
                             initial_indent=_INDENT, subsequent_indent=_INDENT)
    return "\n".join(out)
