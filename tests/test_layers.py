"""The package's shape: no import cycles, no upward imports between the core layers, a torch-free score layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fluxprm"

# Lower number = lower layer. A module may import its own layer or lower ones, never a higher one.
LAYERS = {
    "fluxprm.records": 0, "fluxprm.device": 0, "fluxprm.embedded": 0, "fluxprm.quiet": 0,
    "fluxprm.traces": 1,
    "fluxprm.steps": 2, "fluxprm.scores": 2, "fluxprm.signals": 2,
    "fluxprm.metrics": 3, "fluxprm.models": 3,
    "fluxprm.engine": 4, "fluxprm.outputs": 4,
    "fluxprm.jobs": 5, "fluxprm.distributed": 5,
    "fluxprm.score_job": 6,
    "fluxprm.rl": 7,
    "fluxprm.serve": 8,
    "fluxprm.cli": 9,
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every fluxprm module ``name`` imports, at any depth of the file (function-level imports included)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            r = _resolve(t, mods)
            # a package re-exporting its children, or a child importing its package's parent path, is not an edge
            if r and r != name and not (is_pkg and r.startswith(name + ".")) and not name.startswith(r + "."):
                found.add(r)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports_between_core_layers():
    upward = []
    for module, targets in _graph().items():
        here = _layer(module)
        for t in targets:
            there = _layer(t)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} (layer {here}) imports {t} (layer {there})")
    assert upward == []


def _run_fresh(code: str, timeout: float) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and require that it prints ``ok``."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_score_layer_imports_no_torch():
    code = ("import sys\n"
            "import fluxprm, fluxprm.scores, fluxprm.steps, fluxprm.traces, fluxprm.records, fluxprm.engine.options\n"
            "from fluxprm.scores import read_scores, join_scores, combine\n"
            "import fluxprm.rl, fluxprm.rl.rewards  # a trainer imports the reward formulas before it loads a model\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
            "print('ok')\n")
    _run_fresh(code, timeout=120)


def test_every_public_name_resolves_and_the_command_libraries_need_no_torch():
    code = ("import sys, fluxprm\n"
            "names = [n for n in fluxprm.__all__ if n != '__version__']\n"
            "light = ['BadRecord', 'TraceScore', 'read_scores', 'join_scores', 'run_select', 'run_bon', 'run_eval',\n"
            "         'build_page', 'ScoreOptions', 'StepConfig', 'Trace', 'iter_traces']\n"
            "[getattr(fluxprm, n) for n in light]\n"
            "assert 'torch' not in sys.modules\n"
            "[getattr(fluxprm, n) for n in names]\n"
            "print('ok')\n")
    _run_fresh(code, timeout=300)
