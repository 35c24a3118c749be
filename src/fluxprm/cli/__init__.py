"""The ``fluxprm`` command line: one module per command, each a thin entry over a library function.

Command modules are imported only when their command runs (or shows its help): their options are generated
from the library's dataclasses (:mod:`fluxprm.cli.options`), and ``fluxprm train``'s live next to torch, so
``fluxprm --version`` or ``fluxprm models`` must not pay for ``train``. Help is plain click text, which wraps
at the terminal width and never cuts an option name.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from fluxprm import __version__

__all__ = ["app", "COMMANDS"]

# name → (module defining a function of that name, one line for `fluxprm --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("fluxprm.cli.score", "Score traces with a PRM, step by step: one record per trace."),
    "select": ("fluxprm.cli.select", "Keep the best-scored traces as distillation data (records, SFT chat, report)."),
    "bon": ("fluxprm.cli.bon", "Pick the best of N responses per problem with a PRM; accuracy of every rule vs N."),
    "label": ("fluxprm.cli.label", "Compute ReasonFlux-PRM teacher rewards for training."),
    "train": ("fluxprm.cli.train", "Train a PRM on labels (joint step + trajectory objective)."),
    "export": ("fluxprm.cli.export", "Write a trained checkpoint in the qwen-prm layout (vLLM, SGLang)."),
    "eval": ("fluxprm.cli.eval", "Benchmark PRMs side by side: PRMBench, ProcessBench, outcome, separation, Best-of-N."),
    "view": ("fluxprm.cli.view", "Write a self-contained HTML page of traces, each step coloured by its reward."),
    "serve": ("fluxprm.cli.serve", "Serve a PRM over HTTP (native, OpenRLHF and vLLM protocols) with dynamic batching."),
    "models": ("fluxprm.cli.models", "List the PRMs known by name."),
}


def _load(name: str) -> Any:
    """The click command of ``name``, built by typer from its module's function of that name."""
    module, _ = COMMANDS[name]
    one = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    one.command(name)(getattr(importlib.import_module(module), name))
    return typer.main.get_command(one)


class _LazyCommands(TyperGroup):
    """A command group that imports a command's module only when that command is resolved."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = _load(cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])

    # A bad flag or option value is a usage error like any other: one line `error: …` and exit 2, as the exit
    # code contract says (click would print a usage block and a capitalised `Error:` instead).
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:
            _usage_error(exc)


# click's UsageError as typer raises it: newer typers vendor click (``typer._click``), whose classes are not the
# ``click`` package's; typer.BadParameter derives from it in both cases.
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _usage_error(exc: Any) -> NoReturn:
    """Print a usage error as the one line every other usage error is, naming the command's help."""
    from fluxprm.cli.report import die

    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `fluxprm`: the help itself, as click shows it
        raise exc
    # typer validates values with pydantic, whose messages start with the error class ("Value error, …")
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    command = exc.ctx.command_path if exc.ctx is not None else "fluxprm"
    die(f"{message.rstrip('.')}; see `{command} --help`", exc.exit_code)


app = typer.Typer(cls=_LazyCommands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="fluxprm: process reward models for reasoning traces. Score thinking trajectories and "
                       "responses step by step, compute the ReasonFlux-PRM teacher rewards, train and export PRMs. "
                       "`fluxprm COMMAND --help` shows a command's options.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fluxprm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                help="Print the version and exit.")] = False) -> None:
    """fluxprm: process reward models for reasoning traces."""
    _printable_streams()


def _printable_streams() -> None:
    """Print what a record holds even when it is not valid text: a lone surrogate (from JSON's ``"\\ud800"``
    or a non-UTF-8 file name) is written as ``\\udXXX`` instead of failing the print after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
