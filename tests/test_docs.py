"""The code in the docs is the code a new user copies: its imports must resolve and its flags must exist.

Docs drift when an API or a flag is renamed; a reader then gets an ImportError or "No such option" from a
README line. Running every snippet needs 7B checkpoints, GPUs and servers, so this checks what can be checked
without them: each Python block parses, every ``from fluxprm… import name`` (and ``fluxprm.name``) resolves,
every other name it reads is defined in the block (save the reader's own objects listed below), and every
``--flag`` of a ``fluxprm COMMAND`` in a shell block or an inline code span is one the command declares.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import shlex
import symtable
from pathlib import Path

import pytest
import typer

from fluxprm.cli import COMMANDS, app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Names a snippet uses for the reader's own objects (their data, their trainer): not defined on purpose.
READERS_OWN = {"traces", "prompts", "completions", "answers", "ids", "policy_tokenizer", "GRPOTrainer"}


def blocks(language: str) -> list[tuple[str, int, str]]:
    """``(doc, first line, code)`` of every fenced block of ``language`` in the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M):
            found.append((doc.relative_to(ROOT).as_posix(), text.count("\n", 0, m.start()) + 2, m.group(1)))
    return found


def inline_commands() -> list[tuple[str, int, str]]:
    """``(doc, line, "fluxprm …")`` of every inline code span outside fenced blocks that is a fluxprm command."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
        for m in re.finditer(r"(?<!`)`(fluxprm [^`\n]+)`(?!`)", prose):
            found.append((doc.relative_to(ROOT).as_posix(), text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


PYTHON = blocks("python")
SHELL = blocks("bash")
INLINE = inline_commands()


def test_the_docs_have_snippets_to_check():
    assert len(PYTHON) >= 8 and len(SHELL) >= 30 and len(INLINE) >= 80, (len(PYTHON), len(SHELL), len(INLINE))


def _undefined(code: str) -> set[str]:
    """Names the module (or a function's free variables) reads that nothing in it defines."""
    table = symtable.symtable(code, "<doc>", "exec")
    defined = set(dir(builtins)) | {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    read: set[str] = set()

    def walk(t: symtable.SymbolTable) -> None:
        for s in t.get_symbols():
            if s.is_referenced() and (t.get_type() == "module" or s.is_global()):
                read.add(s.get_name())
        for child in t.get_children():
            walk(child)

    walk(table)
    return read - defined


@pytest.mark.parametrize("doc, line, code", PYTHON, ids=[f"{d}:{n}" for d, n, _ in PYTHON])
def test_a_python_snippet_imports_what_exists_and_defines_what_it_reads(doc, line, code):
    tree = ast.parse(code, filename=f"{doc}:{line}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fluxprm":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{doc}:{line}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fluxprm":
                    importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "fluxprm":
            assert hasattr(importlib.import_module("fluxprm"), node.attr), f"{doc}:{line}: fluxprm.{node.attr}"
    unknown = _undefined(code) - READERS_OWN
    assert not unknown, f"{doc}:{line}: the snippet reads {sorted(unknown)} without defining or importing them"


def _fluxprm_commands(code: str) -> list[tuple[str, list[str]]]:
    """``(subcommand, its words)`` of every ``fluxprm …`` command in a shell block (continuations joined,
    comments dropped, pipelines and ``&&`` lists cut into their commands)."""
    commands = []
    pending = ""
    for line in code.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted string that goes on over the next lines (a JSON body)
            continue
        pending = ""
        command: list[str] = []
        for word in [*words, ";"]:
            if word in ("|", "||", "&&", ";", "&"):
                if command[:3] == ["python", "-m", "fluxprm"]:
                    command = command[2:]
                if len(command) >= 2 and command[0] == "fluxprm" and command[1] in COMMANDS:
                    commands.append((command[1], command[2:]))
                command = []
            else:
                command.append(word)
    assert not pending, f"an unbalanced quote in the shell lines {pending!r}"
    return commands


def _flags(name: str) -> set[str]:
    group = typer.main.get_command(app)
    command = group.get_command(None, name)  # type: ignore[arg-type]
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


@pytest.mark.parametrize("doc, line, code", SHELL + INLINE, ids=[f"{d}:{n}" for d, n, _ in SHELL + INLINE])
def test_every_flag_of_a_fluxprm_command_in_the_docs_exists(doc, line, code):
    """In shell blocks and in inline spans such as `fluxprm eval processbench --scores`."""
    for name, words in _fluxprm_commands(code):
        flags = _flags(name)
        used = {w.split("=", 1)[0] for w in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)}
        unknown = sorted(used - flags)
        assert not unknown, f"{doc}:{line}: `fluxprm {name}` has no {unknown}"


def test_the_flag_check_sees_a_wrong_flag_and_reads_whole_commands():
    """The check itself: it finds the commands of a block and would catch a renamed flag."""
    code = ("fluxprm score a.jsonl \\\n  --long windows -o s.jsonl   # a comment --nope\n"
            "cat x | python -m fluxprm select s.jsonl --top-fraction 0.25 && curl -s -d '{\n  \"a\": 1}' host\n")
    found = _fluxprm_commands(code)
    assert found == [("score", ["a.jsonl", "--long", "windows", "-o", "s.jsonl"]),
                     ("select", ["s.jsonl", "--top-fraction", "0.25"])]
    assert "--long" in _flags("score") and "--lengthy" not in _flags("score")
    assert _undefined("from pathlib import Path\nx = Path('a') / y\n") == {"y"}
