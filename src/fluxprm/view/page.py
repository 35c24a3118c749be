"""``fluxprm view`` as a library call: one self-contained HTML page of scored traces.

The page is a single file that works from ``file://`` with no network (a Content-Security-Policy forbids any
request): inline CSS, a small vanilla-JS app, and the data as JSON in ``<script type="application/json">``
tags. Layout, in document order, chosen so the list paints before a large page has finished loading:

1. the *index* (one small row per trace: id, score, correctness, model, step rewards, flags) and the app,
   which renders the first page of the list as soon as it runs;
2. one *detail* tag per trace (problem, step texts, teacher components), parsed by ``JSON.parse`` only when
   that trace is opened — so 5,000 traces cost one small parse up front, not one 200 MB parse.

JSON inside a script tag is escaped so it can never close the tag: every ``<`` is written ``\\u003c``.

**Page-size guard.** 5,000 traces of 30K tokens are ~600 MB of text: no browser tab wants that. Above
``max_bytes`` the details are shortened so that the page fits: the longest step texts first lose their
middle (head and tail kept — a PRM reads a step's reward at its end), down to a few KB per trace; beyond
that the texts of the last traces are left out (their scores stay listed), and only if the index alone is
too large are whole traces left out. Every such cut is counted in a note shown at the top of the page and
returned to the caller (the CLI prints it on stderr).
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from fluxprm import __version__
from fluxprm.jobs import check_inputs, check_outputs
from fluxprm.traces import FieldMap
from fluxprm.view.data import Collected, Note, collect, encode_json
from fluxprm.view.options import ViewOptions

__all__ = ["ViewReport", "build_page", "water_level"]

MIN_DETAIL_BYTES = 6_000  # below this per trace, shortening leaves too little to read: leave texts out instead
MIN_KEPT_CHARS = 120  # a shortened step keeps at least this many characters (head + tail)
HEAD_SHARE = 0.4  # of a shortened step's kept characters, the share taken from its head (the rest from its tail)
_WRAP = len('<script type="application/json" id="fluxprm-d-0000000"></script>\n')
_PLACEHOLDER = re.compile(rb"\{\{(title|css|index|js)\}\}")


@dataclass
class ViewReport:
    """What was written: counts, and the notes (missing matches, cuts) the page shows at its top."""

    out: Path
    bytes: int
    traces: int
    with_text: int
    shortened: int = 0
    texts_left_out: int = 0
    traces_left_out: int = 0
    notes: list[Note] = field(default_factory=list)
    unreadable_scores: int = 0  # lines of the scores file that are not score records


def water_level(sizes: Sequence[int], budget: int) -> int:
    """The largest cap ``c`` with ``sum(min(s, c) for s in sizes) <= budget`` (every size at most ``c`` then fits).

    Cutting everything above one level takes from the longest items only, and as little as possible.
    """
    if sum(sizes) <= budget:
        return max(sizes, default=0)
    ordered = sorted(sizes)
    below = 0
    for i, s in enumerate(ordered):
        remaining = len(ordered) - i
        if below + s * remaining > budget:
            return max(0, (budget - below) // remaining)
        below += s
    return ordered[-1]


def build_page(scores: str | os.PathLike, out: str | os.PathLike, traces: Sequence[str | os.PathLike] = (),
               labels: str | os.PathLike | None = None, options: ViewOptions = ViewOptions(),
               fields: FieldMap | None = None) -> ViewReport:
    """Write the viewer page for a scores file (and optionally its traces and labels) to ``out``.

    Raises ``FileNotFoundError`` / ``IsADirectoryError`` for a missing or folder input,
    :class:`~fluxprm.jobs.InputNotAFile` for a pipe, :class:`~fluxprm.jobs.OutputPathError` for an ``out`` that
    is an input, a folder or in no writable folder (all before reading), and ``OSError`` when writing fails; every
    record-level problem (no trace for a score, no score for a trace, steps that do not match) is a note in
    the report and on the page, never an exception.
    """
    inputs = [str(scores), *map(str, traces), *([str(labels)] if labels is not None else [])]
    check_inputs(inputs)
    check_outputs(inputs, Path(out), None, "-o")
    collected = collect(str(scores), [str(t) for t in traces], None if labels is None else str(labels),
                        options.steps, fields)
    try:
        return _write(collected, Path(out), options, str(scores), [str(t) for t in traces], labels)
    finally:
        collected.close()


@functools.cache
def _assets() -> dict[str, str]:
    folder = resources.files("fluxprm.view") / "assets"
    return {name: (folder / name).read_text(encoding="utf-8") for name in ("page.html", "view.css", "view.js")}


def _write(collected: Collected, out: Path, options: ViewOptions, scores: str, traces: list[str],
           labels: Any) -> ViewReport:
    assets = _assets()
    title = options.title or f"fluxprm view · {os.path.basename(scores)}"
    rows = collected.rows
    fixed = len(assets["page.html"]) + len(assets["view.css"].encode()) + len(assets["view.js"].encode()) + 4096
    details = {pos: length + _WRAP for pos, (_, length) in collected.spans.items()}
    plan = _Plan.make(rows, details, options.max_bytes - fixed)
    notes = list(collected.notes) + plan.notes(options.max_bytes)
    with tempfile.TemporaryFile(prefix="fluxprm-view-short-") as spool:
        shortened: dict[int, tuple[int, int]] = {}  # position → where its shortened detail is in the spool
        for pos in plan.cap_at:
            data, omitted = _shorten(collected.detail(pos) or b"", plan.cap - _WRAP)
            shortened[pos] = (spool.tell(), len(data))
            spool.write(data)
            rows[pos]["short"] = omitted

        def detail(pos: int) -> bytes:
            if pos not in shortened:
                return collected.detail(pos) or b""
            spool.seek(shortened[pos][0])
            return spool.read(shortened[pos][1])

        return _emit(collected, out, options, plan, rows, notes, detail, title, scores, traces, labels)


def _emit(collected: Collected, out: Path, options: ViewOptions, plan: "_Plan", rows: list[dict[str, Any]],
          notes: list[Note], detail: Callable[[int], bytes], title: str, scores: str, traces: list[str],
          labels: Any) -> ViewReport:
    """Write the page: head, index and app, one detail tag per trace, tail — to a partial file moved into place."""
    assets = _assets()
    for pos in plan.texts_out:
        rows[pos]["text"] = "left_out"
    kept_rows = [dict(row, i=pos) for pos, row in enumerate(rows[: plan.rows])]
    index = {
        "title": title, "version": __version__, "scores": scores, "traces": traces,
        "labels": None if labels is None else str(labels), "rows": kept_rows,
        "notes": [n.to_json() for n in notes], "range": collected.reward_range, "pageSize": options.page_size,
        "prms": sorted({r["prm"] for r in kept_rows if r.get("prm")}),
    }
    values = {b"title": html.escape(title).encode("utf-8", "backslashreplace"), b"css": assets["view.css"].encode(),
              b"index": encode_json(index), b"js": assets["view.js"].encode()}
    # Split before filling in: the data may well contain "{{details}}" itself.
    head, tail = (_PLACEHOLDER.sub(lambda m: values[m.group(1)], part)
                  for part in assets["page.html"].encode().split(b"{{details}}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    written = with_text = 0
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for pos in range(plan.rows):
                if pos in plan.texts_out or pos not in collected.spans:
                    continue
                f.write(b'<script type="application/json" id="fluxprm-d-%d">' % pos + detail(pos) + b"</script>\n")
                with_text += rows[pos]["text"] not in ("none", "left_out")
            f.write(tail)
            written = f.tell()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave half a page behind
        raise
    return ViewReport(out, written, plan.rows, with_text, len(plan.cap_at), len(plan.texts_out),
                      len(rows) - plan.rows, notes, collected.unreadable_scores)


@dataclass
class _Plan:
    """What the page-size guard keeps: the first ``rows`` traces, details over ``cap`` bytes shortened to it,
    and the details in ``texts_out`` left out."""

    rows: int
    cap: int
    cap_at: list[int]
    texts_out: set[int]
    total_rows: int
    omitted_bytes: int = 0

    @classmethod
    def make(cls, rows: list[dict[str, Any]], details: dict[int, int], budget: int) -> "_Plan":
        row_sizes = [len(encode_json(r)) + 16 for r in rows]  # + the flags the guard may add
        index_bytes = sum(row_sizes)
        n = len(rows)
        while n and index_bytes > budget:  # the index alone is too large: leave out whole traces, last first
            n -= 1
            index_bytes -= row_sizes[n]
        budget -= index_bytes
        kept = {pos: size for pos, size in details.items() if pos < n}
        texts_out: set[int] = set()
        if sum(kept.values()) <= budget:
            return cls(n, max(kept.values(), default=0), [], set(), len(rows))
        cap = water_level(list(kept.values()), budget)
        if cap < MIN_DETAIL_BYTES:  # too little per trace: keep readable texts for the first traces only
            cap, used = MIN_DETAIL_BYTES, 0
            for pos in sorted(kept):
                used += min(kept[pos], cap)
                if used > budget:
                    texts_out.add(pos)
        cap_at = [pos for pos, size in kept.items() if size > cap and pos not in texts_out]
        omitted = sum(size - cap for pos, size in kept.items() if pos in cap_at)
        return cls(n, cap, sorted(cap_at), texts_out, len(rows), omitted)

    def notes(self, max_bytes: int) -> list[Note]:
        made: list[Note] = []
        limit = f"--max-bytes {max_bytes:,}"
        if self.cap_at:
            made.append(Note(f"page-size guard ({limit}): the step texts of {len(self.cap_at):,} long trace(s) were "
                             f"shortened in the middle to about {self.cap // 1000:,} KB per trace "
                             f"(~{self.omitted_bytes / 1e6:,.1f} MB left out; each cut is marked in the text)",
                             count=len(self.cap_at)))
        if self.texts_out:
            made.append(Note(f"page-size guard ({limit}): the texts of {len(self.texts_out):,} trace(s) at the end of "
                             "the list were left out; their scores and step rewards are still shown",
                             count=len(self.texts_out)))
        if self.rows < self.total_rows:
            made.append(Note(f"page-size guard ({limit}): {self.total_rows - self.rows:,} trace(s) at the end of the "
                             f"scores file were left out entirely (the list alone would exceed the limit)",
                             count=self.total_rows - self.rows))
        return made


def _text_slots(detail: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Every (container, key) holding a text of the detail: problem, steps, dropped and unsegmented texts."""
    slots: list[tuple[Any, Any]] = []
    if isinstance(detail.get("problem"), str):
        slots.append((detail, "problem"))
    for name in ("thinking", "response"):
        part = detail.get(name)
        if not isinstance(part, dict):
            continue
        slots += [(part["steps"], i) for i, s in enumerate(part.get("steps") or []) if isinstance(s, str)]
        slots += [(part, k) for k in ("dropped", "text") if isinstance(part.get(k), str)]
    return slots


def _shorten(data: bytes, cap: int) -> tuple[bytes, int]:
    """The detail with its longest texts cut in the middle until it takes at most ``cap`` bytes (about).

    A cut text becomes ``[head, characters left out, tail]``, which the page renders with a marker.
    Returns the new JSON and the number of characters left out.
    """
    detail = json.loads(data)
    slots = _text_slots(detail)
    originals = [c[k] for c, k in slots]
    lengths = [len(s) for s in originals]
    text_bytes = max(1, len(encode_json(originals)) - 3 * len(originals))  # as written: escapes count
    overhead = max(0, len(data) - text_bytes)
    target = int(sum(lengths) * max(0, cap - overhead) / text_bytes)
    result, omitted = data, 0
    for _ in range(12):
        level = max(MIN_KEPT_CHARS, water_level(lengths, target))
        omitted = 0
        for (container, key), text in zip(slots, originals):
            if len(text) > level:
                head = int(level * HEAD_SHARE)
                tail = level - head
                container[key] = [text[:head], len(text) - head - tail, text[len(text) - tail:]]
                omitted += len(text) - head - tail
            else:
                container[key] = text
        result = encode_json(detail)
        if len(result) <= cap or level == MIN_KEPT_CHARS:
            break
        target = int(target * min(0.97, cap / len(result)))
    return result, omitted
