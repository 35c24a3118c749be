"""The command line's help at 80 columns, and the options generated from the library's dataclasses.

Help is read by people on ordinary terminals: no option name may be cut (``--rollout-temper…``), no line
may run past the terminal, and every knob of the dataclass a command uses must be there under its own name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from fluxprm.cli import COMMANDS, app
from fluxprm.cli.common import FIELD_OVERRIDES
from fluxprm.cli.options import Expand, generated_options, option_names
from fluxprm.engine.options import ScoreOptions
from fluxprm.labels.pipeline import LabelConfig
from fluxprm.steps import StepConfig, step_config_for
from fluxprm.traces import FieldMap


def help_text(*args: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "fluxprm", *args, "--help"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def command_flags(name: str) -> list[str]:
    """Every flag the command declares (generated and hand-written), from the click command itself."""
    group = typer.main.get_command(app)
    command = group.get_command(None, name)  # type: ignore[arg-type]
    return [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


def appears_whole(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def assert_readable(text: str, columns: int = 80) -> None:
    assert "…" not in text
    long = [line for line in text.splitlines() if len(line) > columns]
    assert not long, long


def _train_config() -> type:
    from fluxprm.train import TrainConfig

    return TrainConfig


@pytest.mark.parametrize("command, dataclasses", [
    ("score", lambda: [(ScoreOptions, Expand()), (FieldMap, FIELD_OVERRIDES)]),
    ("label", lambda: [(LabelConfig, Expand()), (FieldMap, FIELD_OVERRIDES)]),
    ("train", lambda: [(_train_config(), Expand())]),
])
def test_help_at_80_columns_shows_every_option_whole(command, dataclasses):
    text = help_text(command)
    assert_readable(text)
    generated = [flag for cls, spec in dataclasses() for flag in option_names(cls, spec)]
    flags = command_flags(command)
    assert set(generated) <= set(flags), set(generated) - set(flags)
    missing = [f for f in flags if not appears_whole(f, text)]
    assert not missing, missing


def test_score_help_shows_segmentation_defaults_readably():
    text = help_text("score")
    assert re.search(r"\[default: \\n\\n\]", text), "the separator's default is shown as typed: \\n\\n"
    for flag in ("--long", "--spans", "--threads", "--ray", "--on-error", "--errors", "--resume"):
        assert appears_whole(flag, text), flag
    assert "auto|truncate|windows" in text


def test_top_level_help_lists_only_commands_that_exist():
    text = help_text()
    assert_readable(text)
    import importlib.util

    for name, (module, _) in COMMANDS.items():
        assert appears_whole(name, text), name
        assert importlib.util.find_spec(module) is not None, f"{name} is listed but {module} does not exist"
    listed = re.findall(r"^  (\w+)  ", text.split("Commands:", 1)[1], flags=re.M)
    assert listed == list(COMMANDS), listed  # nothing listed that is not a command


def test_top_level_does_not_import_torch():
    code = "import sys; from fluxprm.cli import app; app(['--version'], standalone_mode=False); " \
           "print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split()[-1] == "False", res.stdout + res.stderr


def test_format_choices_are_the_registry_names_in_detection_order():
    """``--format`` offers a torch-free copy of the registry's names; a format added to the registry must be
    added there too (else ``--format NEW`` would be refused)."""
    from fluxprm.cli.model_options import FORMAT_NAMES
    from fluxprm.models.formats import FORMATS

    assert FORMAT_NAMES == tuple(FORMATS)


def test_score_serve_train_help_and_usage_errors_do_not_import_torch(tmp_path):
    """``score``/``serve``/``train`` --help, a usage error and a training config error answer before torch is
    imported (~7 s cold): nothing loads."""
    src = tmp_path / "x.jsonl"
    src.write_text('{"id": "a", "problem": "p", "response": "r"}\n')
    out = str(tmp_path / "ckpt")
    code = ("import json, sys\n"
            "from fluxprm.cli import app\n"
            "codes = []\n"
            f"for args in (['score', '--help'], ['serve', '--help'], ['score', {str(src)!r}, '--long', 'sideways'],\n"
            "             ['score', '--format', 'nope', 'x'], ['serve', '--format', 'nope'], ['train', '--help'],\n"
            f"             ['train', {str(src)!r}, '-o', {out!r}, '--set', 'batch_size=-1'],\n"
            f"             ['train', {str(src)!r}, '-o', {out!r}, '--set', 'trajectory_signals=[nope]']):\n"
            "    try:\n"
            "        app(args)\n"
            "    except SystemExit as exc:\n"
            "        codes.append(exc.code)\n"
            "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.splitlines()[-1]) == {"codes": [0, 0, 2, 2, 2, 0, 2, 2], "torch": False}, res.stdout[-3000:]
    assert "--format <fluxprm|scalar-head|qwen-prm|token-classification|math-shepherd>" in res.stdout
    assert "--long" in res.stderr and "'sideways' is not one of" in res.stderr, res.stderr[-3000:]
    assert "batch_size must be >= 1" in res.stderr and "trajectory_signals" in res.stderr, res.stderr[-3000:]
    assert "Invalid value for '--format'" in res.stderr and "'nope' is not one of" in res.stderr, res.stderr[-3000:]


@pytest.mark.parametrize("args, message", [
    (["score", "x.jsonl", "--long", "bogus"], "error: Invalid value for '--long': 'bogus' is not one of "),
    (["score", "x.jsonl", "--batch-tokens", "abc"], "error: Invalid value for '--batch-tokens': "),
    (["score", "x.jsonl", "--chunk-size", "-3"], "error: Invalid value for --chunk-size: must be >= 1, got -3"),
    (["select", "x.jsonl", "-o", "y.jsonl", "--top-fraction", "2"], "error: Invalid value: --top-fraction must be"),
    (["score", "x.jsonl", "--batch-token", "3"], "error: No such option: --batch-token (Possible options: "),
    (["score"], "error: Missing argument 'INPUT'"),
    (["eval", "outcome"], "error: Missing argument 'INPUT'"),
    (["--foo"], "error: No such option: --foo"),
    (["nosuch"], "error: No such command 'nosuch'"),
])
def test_a_usage_error_click_finds_is_one_error_line_naming_the_help_and_exit_2(args, message):
    """The exit-code contract (docs/CLI.md): a bad flag or option value ends in one line ``error: …``, exit 2 —
    also when click's parser finds it (it would print a usage block and ``Error:``), never typer's pydantic
    prefix ("Value error, ")."""
    res = CliRunner().invoke(app, args, prog_name="fluxprm")
    command = " ".join(["fluxprm", *args[:1]]) if args[0] in COMMANDS else "fluxprm"
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and res.stderr.count("\n") == 1, res.output
    assert res.stderr.startswith(message) and "Value error" not in res.stderr, res.stderr
    assert res.stderr.rstrip().endswith(f"; see `{command} --help`"), res.stderr


def test_bare_fluxprm_still_shows_its_help():
    res = CliRunner().invoke(app, [])
    assert res.exit_code == 2 and "Commands:" in res.output and "error:" not in res.output, res.output


# ------------------------------------------------------------------------------- the generator


@dataclass(frozen=True)
class _Inner:
    separator: str = field(default="\n\n", metadata={"help": "Separator.", "escapes": True})
    min_chars: int = field(default=30, metadata={"help": "Shortest step.", "min": 0})


@dataclass
class _Outer:
    inner: _Inner | None = field(default=None, metadata={"flatten": _Inner})
    mode: str = field(default="raise", metadata={"help": "Mode.", "choices": ("raise", "skip", "fail"),
                                                 "cli_choices": ("skip", "fail"), "cli_default": "skip"})
    fast: bool = field(default=False, metadata={"help": "Go fast."})
    names: list[str] = field(default_factory=lambda: ["a", "b"], metadata={"help": "Names."})
    cap: int | None = None


def _run(func: Any, *args: str) -> Any:
    seen: dict[str, Any] = {}
    command = generated_options(func(seen))
    toy = typer.Typer(add_completion=False, rich_markup_mode=None)
    toy.command("toy")(command)
    toy.command("other")(lambda: None)
    result = CliRunner().invoke(toy, ["toy", *args])
    return result, seen


def _capture(seen: dict[str, Any]) -> Any:
    def toy(*, options: _Outer, explicit: dict[str, Any]) -> None:
        seen.update(options=options, explicit=explicit)
    return toy


def test_generated_options_build_the_dataclass_and_know_what_was_given():
    result, seen = _run(_capture)
    assert result.exit_code == 0, result.output
    assert seen["options"] == _Outer(mode="skip") and seen["explicit"] == {}  # cli_default, nested left unset
    result, seen = _run(_capture, "--separator", "\\n", "--mode", "fail", "--fast", "--names", "x", "--cap", "3")
    assert result.exit_code == 0, result.output
    assert seen["options"] == _Outer(inner=_Inner(separator="\n"), mode="fail", fast=True, names=["x"], cap=3)
    assert seen["explicit"] == {"separator": "\n", "mode": "fail", "fast": True, "names": ["x"], "cap": 3}


@pytest.mark.parametrize("args, needle", [
    (["--min-chars", "-1"], "--min-chars"),
    (["--mode", "raise"], "--mode"),         # the library's choice the CLI does not offer
    (["--separator", "tab\\"], "--separator"),
])
def test_generated_options_reject_bad_values_naming_the_flag(args, needle):
    result, _ = _run(_capture, *args)
    assert result.exit_code == 2 and needle in result.output, result.output


def test_generated_help_shows_defaults_as_typed():
    toy = typer.Typer(add_completion=False, rich_markup_mode=None)
    toy.command("toy")(generated_options(_capture({})))
    toy.command("other")(lambda: None)
    text = " ".join(CliRunner().invoke(toy, ["toy", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "[default: \\n\\n]" in text and "[default: skip]" in text and "[default: --no-fast]" in text
    assert "skip|fail" in text and "raise" not in text
    assert "[default: a b]" in text


def test_dict_parameter_gets_only_the_fields_given():
    seen: dict[str, Any] = {}

    def toy(*, flags: Annotated[dict[str, Any], Expand(of=_Inner)]) -> None:
        seen.update(flags)

    command = typer.Typer(add_completion=False, rich_markup_mode=None)
    command.command("toy")(generated_options(toy))
    command.command("other")(lambda: None)
    assert CliRunner().invoke(command, ["toy", "--min-chars", "5"]).exit_code == 0
    assert seen == {"min_chars": 5}


def test_trained_segmentation_wins_unless_a_flag_is_given():
    """What `fluxprm score` does with the segmentation flags the user gave (and only those)."""
    seen: dict[str, Any] = {}

    def toy(*, options: ScoreOptions, explicit: dict[str, Any]) -> None:
        seen.update(explicit=explicit)

    command = typer.Typer(add_completion=False, rich_markup_mode=None)
    command.command("toy")(generated_options(toy))
    command.command("other")(lambda: None)
    assert CliRunner().invoke(command, ["toy", "--min-chars", "0"]).exit_code == 0
    trained = {"separator": "\n", "min_chars": 12, "max_thinking_steps": 8, "max_response_steps": 4}
    assert step_config_for(trained, seen["explicit"]) == StepConfig("\n", 0, 8, 4)


def test_bon_help_shows_the_system_prompt_default_with_its_one_backslash():
    """--system-prompt reads no escapes, so its default is shown as it is (one backslash), as one would type it."""
    from fluxprm.bon import BonOptions

    text = " ".join(help_text("bon").split())
    assert "\\boxed{}" in BonOptions().system_prompt and "\\\\boxed" not in BonOptions().system_prompt
    assert "within \\boxed{}.]" in text and "\\\\boxed" not in text


@dataclass
class _Bounded:
    pattern: str = field(default="\\d+", metadata={"help": "Pattern."})
    lines: str = field(default="a\nb", metadata={"help": "Lines."})
    budget: int = field(default=500, metadata={"help": "Budget.", "min": 100})
    count: int = field(default=3, metadata={"help": "Count.", "min": 1})


def test_generated_help_shows_unguessable_minimums_and_backslashes_as_typed():
    def toy(*, options: _Bounded) -> None:
        pass

    command = typer.Typer(add_completion=False, rich_markup_mode=None)
    command.command("toy")(generated_options(toy))
    command.command("other")(lambda: None)
    text = " ".join(CliRunner().invoke(command, ["toy", "--help"], env={"COLUMNS": "80"}).output.split())
    assert "[default: \\d+]" in text and "[default: a\\nb]" in text  # a newline cannot be shown as it is
    assert "[default: 500; minimum: 100]" in text and "[default: 3]" in text
    result = CliRunner().invoke(command, ["toy", "--budget", "99"])
    assert result.exit_code == 2 and "must be >= 100" in result.output


def test_label_on_error_help_names_only_the_choices_it_offers():
    """`raise` is the library's default; the CLI offers skip|fail, and its help must not describe a third value."""
    text = help_text("label")
    section = text[text.index("--on-error"):text.index("--no-judge")]
    assert "<skip|fail>" in section and "raise" not in section
    result = CliRunner().invoke(app, ["label", "in.jsonl", "-o", "out.jsonl", "--on-error", "raise"])
    assert result.exit_code == 2


def test_every_string_option_with_an_unprintable_default_reads_escapes():
    """Help shows such a default escaped (`--joiner` `[default: \\n\\n]`); typed as shown, an option that does not
    read escapes got two backslashes and two n's. Checked over every options dataclass the CLI is generated from."""
    import dataclasses

    from fluxprm.bon import BonOptions
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.eval.context import EvalOptions
    from fluxprm.labels.pipeline import LabelConfig
    from fluxprm.select import SelectOptions
    from fluxprm.serve.options import ServeOptions
    from fluxprm.steps import StepConfig
    from fluxprm.train.config import TrainConfig
    from fluxprm.view.options import ViewOptions

    unread = [f"{cls.__name__}.{f.name}" for cls in (BonOptions, ScoreOptions, EvalOptions, LabelConfig, SelectOptions,
                                                    ServeOptions, StepConfig, TrainConfig, ViewOptions)
              for f in dataclasses.fields(cls)
              if isinstance(f.default, str) and not f.default.isprintable() and not f.metadata.get("escapes")]
    assert unread == []


@pytest.mark.parametrize("args", [["score", "x.jsonl", "--alpha", "nan"], ["serve", "--alpha", "inf"],
                                  ["select", "x.jsonl", "-o", "y.jsonl", "--top-k", "1", "--alpha", "-inf"],
                                  ["eval", "processbench", "x.jsonl", "-o", "ev", "--threshold", "nan"]])
def test_a_weight_or_threshold_that_is_not_a_finite_number_is_a_usage_error(args):
    """``score --alpha nan`` made every score null and exited 0; ``eval --threshold nan`` ran."""
    res = CliRunner().invoke(app, args, prog_name="fluxprm")
    assert res.exit_code == 2 and "must be a finite number" in res.stderr and res.stderr.count("\n") == 1, res.output
