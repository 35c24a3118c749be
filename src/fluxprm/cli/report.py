"""What the commands print on stderr: errors, warnings, progress, summary tables, why records were rejected.

Everything goes to stderr, so stdout carries only records (``fluxprm score`` without ``-o``). Tables are
plain text that wraps into several blocks of columns on a narrow terminal: a header or a value is never
cut (rich tables abbreviate them to ``quali…`` at 80 columns).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

import typer

if TYPE_CHECKING:
    from fluxprm.jobs import JobResult

__all__ = ["die", "warn", "say", "table", "print_table", "print_rejections", "print_duplicates", "progress_bar",
           "stage_progress", "exit_if_nothing_written"]

_GAP = "  "


def say(message: str) -> None:
    """One line of information on stderr."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    say(f"warning: {message}")


def die(message: str, code: int = 2) -> NoReturn:
    """Stop with one line on stderr: exit 2 for a usage problem (bad input, option or model), 1 for a failed run."""
    say(f"error: {message}")
    raise typer.Exit(code)


def table(title: str, cells: Sequence[tuple[str, str]], width: int | None = None) -> str:
    """A one-row table of ``(header, value)`` cells, right-aligned; columns that do not fit ``width`` go on to
    another block below, so nothing is ever abbreviated."""
    width = width or shutil.get_terminal_size((80, 24)).columns
    blocks: list[list[tuple[str, str, int]]] = [[]]
    used = 0
    for header, value in cells:
        w = max(len(header), len(value))
        if blocks[-1] and used + len(_GAP) + w > width:
            blocks.append([])
            used = 0
        used += w + (len(_GAP) if blocks[-1] else 0)
        blocks[-1].append((header, value, w))
    lines = [title]
    for block in blocks:
        lines.append(_GAP.join(h.rjust(w) for h, _, w in block))
        lines.append(_GAP.join(v.rjust(w) for _, v, w in block))
    return "\n".join(lines)


def print_table(title: str, cells: Sequence[tuple[str, str]]) -> None:
    say(table(title, cells))


def print_rejections(result: JobResult) -> None:
    """How many records were rejected, the commonest causes with counts and a ``file:line`` example each,
    and the hint of the commonest cause (e.g. ``try --steps-field process``)."""
    print_causes(result.rejected, result.errors if result.errors_written else None, result.error_causes)


def print_causes(rejected: int, errors: object, causes: list) -> None:
    """The rejection report of any command: count, errors file, commonest causes (``ErrorCause`` objects or
    their dicts), and the first cause's hint."""
    from fluxprm.jobs import ErrorCause

    if not rejected:
        return
    causes = [c if isinstance(c, ErrorCause) else ErrorCause(**c) for c in causes]
    where = f" → {errors}" if errors else ""
    say(f"rejected: {rejected} record{'s' * (rejected != 1)}{where}")
    for cause in causes:
        say(f"  {cause.count:>6}  {cause.cause}")
        say(f"          e.g. {cause.example}")
    hint = causes[0].hint if causes else None
    if hint:
        say(f"hint: try {hint}" if hint.startswith("-") else f"hint: {hint}")


def print_duplicates(result: JobResult) -> None:
    """Records that repeat an earlier record's id: joining outputs by id would pair the wrong records."""
    if result.duplicate_ids:
        examples = "; ".join(result.duplicate_examples)
        n = result.duplicate_ids
        warn(f"{n} record{'s repeat' if n != 1 else ' repeats'} an earlier record's id "
             f"(e.g. {examples}); join outputs to inputs by source and line, not by id")


def exit_if_nothing_written(result: JobResult, verb: str) -> None:
    """Exit 1 when records were read but not one came out: the run produced nothing usable."""
    if result.records_in and not result.written and not result.skipped_done:
        die(f"none of the {result.records_in} records could be {verb}; see the causes above", code=1)


def progress_bar(label: str, total: int | None, enabled: bool = True):
    """Progress on stderr counting input records; returns ``(context manager, advance)``.

    On a terminal, a rich progress bar. Otherwise (a log file, ``nohup``, CI) rich would draw nothing until the
    end, so a plain line is printed at most every ``LOG_EVERY_SECONDS`` instead, and one with the final count at
    the end (as rich does; not for a run that did nothing): an hour-long ``label`` run in a log shows where it is.
    ``advance(n)`` counts records this run finished; ``advance.resumed(n)`` (called by
    :func:`fluxprm.jobs.report_resumed`) counts those an earlier run finished, which the time left ignores;
    ``advance.detail(text)`` says what the chunk in hand is doing (``label``: ``judge 120/262 steps``), shown
    beside the count until the next detail (``""`` clears it).
    """
    from rich.console import Console

    console = Console(stderr=True)
    if enabled and not console.is_terminal:
        lines = _ProgressLines(label, total)
        return lines, lines
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[detail]}"), console=console, transient=False,
                        disable=not enabled)
    return progress, _RichAdvance(progress, progress.add_task(label, total=total, detail=""))


def stage_progress(label: str):
    """Progress of a job that runs in stages (``train``: features, then optimizer steps); returns ``(context
    manager, report)`` where ``report(stage, i, n)`` says stage ``stage`` is at ``i`` of ``n``.

    On a terminal, one transient rich bar whose description is the stage. Otherwise (a log, ``nohup``) throttled
    plain lines as :func:`progress_bar` prints them (``training steps 300/2000  15%  1:30 elapsed  ~8:30 left``),
    one display per stage, so an hour of LoRA training in a log is never silent.
    """
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        from rich.progress import Progress

        progress = Progress(console=console, transient=True)
        task = progress.add_task(label, total=None)

        def report(stage: str, i: int, n: int) -> None:
            progress.update(task, description=f"{label} {stage}", completed=i, total=n)

        return progress, report
    stages = _StageLines(label)
    return stages, stages.report


class _StageLines:
    """One :class:`_ProgressLines` per stage, counting the stage's own unit; a new stage closes the last one (its
    final line says where it ended)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.current: tuple[str, _ProgressLines] | None = None

    def __enter__(self) -> "_StageLines":
        return self

    def report(self, stage: str, i: int, n: int) -> None:
        if self.current is None or self.current[0] != stage:
            self._close()
            lines = _ProgressLines(f"{self.label} {stage}", n, unit="")
            self.current = (stage, lines.__enter__())
        lines = self.current[1]
        lines.advance(i - lines.done)

    def _close(self) -> None:
        if self.current is not None:
            self.current[1].__exit__(None, None, None)
            self.current = None

    def __exit__(self, *exc: object) -> None:
        self._close()


class _RichAdvance:
    """``advance`` for a rich bar: resumed records restart the task at their count, so rich's speed (and the time
    left) is measured from this run's records only."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def __call__(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def resumed(self, n: int) -> None:
        self.progress.reset(self.task, completed=n)

    def detail(self, text: str) -> None:
        self.progress.update(self.task, detail=text)


LOG_EVERY_SECONDS = 30.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class _ProgressLines:
    """Progress as throttled plain lines (``labelling 32/137 records  23% (judge 120/262 steps)  7:41 elapsed
    ~17:30 left``; the part in brackets is the chunk in hand's :meth:`detail`).

    A line is printed when records finish and ``every`` seconds have passed since the last one, and also, from
    a background thread, when ``every`` seconds pass with no record finished: a label run's chunk of 16 long
    traces can take ten minutes, and a log that stays silent that long looks like a hung job.

    The time left is estimated from this run's own pace: the records an earlier run finished (a ``--resume``
    run reports them through :meth:`resumed` before any work) move the count but not the pace, which would
    otherwise promise a finish far too early.
    """

    def __init__(self, label: str, total: int | None, every: float = LOG_EVERY_SECONDS, unit: str = "records") -> None:
        self.label, self.total, self.done, self.every, self.unit = label, total, 0, every, unit
        self.started = self.last = 0.0
        self.printed = False
        self.note = ""  # what the chunk in hand is doing (detail)
        self.pace_from: tuple[float, int] | None = None  # (time, done) the pace is measured from
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> "_ProgressLines":
        self.started = self.last = time.monotonic()
        if self.every > 0:
            self._heartbeat = threading.Thread(target=self._beat, name="fluxprm-progress", daemon=True)
            self._heartbeat.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                if time.monotonic() - self.last >= self.every:
                    self._line()

    def __call__(self, n: int) -> None:
        self.advance(n)

    def advance(self, n: int) -> None:
        """``n`` more records finished by this run."""
        with self._lock:
            now = time.monotonic()
            self.done += n
            if now - self.last >= self.every:
                self._line(now)

    def resumed(self, n: int) -> None:
        """``n`` records an earlier run finished: counted as done; the pace is measured from here on."""
        with self._lock:
            self.done += n
            self.pace_from = (time.monotonic(), self.done)

    def detail(self, text: str) -> None:
        """What the chunk in hand is doing; shown on the next line printed (no line of its own)."""
        with self._lock:
            self.note = text

    def _line(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last, self.printed = now, True
        elapsed = now - self.started
        text = f"{self.label} {self.done}" + (f"/{self.total}" if self.total else "") + (f" {self.unit}" if self.unit else "")
        if self.total:
            text += f"  {100 * self.done / self.total:.0f}%"
        if self.note:
            text += f" ({self.note})"
        text += f"  {_clock(elapsed)} elapsed"
        since, done_then = self.pace_from or (self.started, 0)
        if self.total and done_then < self.done < self.total:
            text += f"  ~{_clock((now - since) * (self.total - self.done) / (self.done - done_then))} left"
        say(text)

    def __exit__(self, *exc: object) -> None:
        # the final count, also of a failed run (how far it got; its error is printed after this) — unless nothing
        # was done nor shown: a run refused at once (e.g. a --resume that does not match) prints its error only
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.done or self.printed:
            self._line()
