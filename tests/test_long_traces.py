"""Long traces in windows with preceding context (issue 11 §2; figures in docs/LONG_TRACES.md).

Three promises of ``--long windows``, each tested here:

- every step is scored exactly once across the windows, for every checkpoint format, and a step scored
  in a window gets the reward the model-card recipe gives it when fed exactly what the window shows
  (the independent references of tests/builders.py); a window whose context reaches the first step gives
  the full-context reward;
- every window shows the problem and at least ``context_tokens`` of the text before its own steps (where
  there is that much), and the response is scored in the last window with as much before it as fits;
- on short traces that fit the context, windows at an artificially small context correlate with
  full-context scoring as the docs say (fluxprm-mini, float32, a fixed fixture).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from builders import (build_math_shepherd, build_qwen_prm, build_scalar_head, build_token_classification,
                      ref_math_shepherd, ref_qwen_prm, ref_scalar_head_prefix_rewards, ref_token_classification)
import fluxprm
from fluxprm import load_prm
from fluxprm.engine.fit import encode_windows, fit_trace
from fluxprm.engine.options import DEFAULT_CONTEXT_TOKENS, ScoreOptions
from fluxprm.steps import PRMInput, prepare, step_config_for
from fluxprm.traces import parse_record

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "long_traces" / "skythought_amc23_short_sample.jsonl"
DOCS = ROOT / "docs" / "LONG_TRACES.md"

PROBLEM = "A jar holds red and blue marbles in the ratio three to five. How many marbles are blue"
# Steps end in a word, so a step's last token is the same whether a joiner or the end of the turn follows it.
THINKING = [f"Thought {k}: we count the marbles again " + "and check the ratio " * (1 + k % 4) + "carefully"
            for k in range(12)]
RESPONSE = ["So there are forty blue marbles in total", "The answer is forty"]
STEPS = THINKING + RESPONSE


_LOADED: dict[str, object] = {}


def _load(folder: Path | str):
    """Each model once per module (loading the real Qwen2.5 tokenizer takes seconds)."""
    if str(folder) not in _LOADED:
        _LOADED[str(folder)] = load_prm(str(folder), dtype="float32", device="cpu")
    return _LOADED[str(folder)]


def _with_context_length(prm, max_length: int):
    """The same loaded model with a smaller context budget (what ``load_prm(..., max_length=N)`` sets)."""
    small = copy.copy(prm)
    small.max_length = max_length
    return small


def _item() -> PRMInput:
    return PRMInput(problem=PROBLEM, thinking_steps=list(THINKING), response_steps=list(RESPONSE))


FORMATS = {  # name: (builder, reference(folder, problem, steps) -> step rewards)
    "qwen-prm": (build_qwen_prm, ref_qwen_prm),
    "scalar-head": (build_scalar_head, ref_scalar_head_prefix_rewards),
    "math-shepherd": (build_math_shepherd, ref_math_shepherd),
    "token-classification": (build_token_classification, ref_token_classification),
    "fluxprm-mini": (None, None),
}


def _folder(name: str) -> Path | str:
    builder = FORMATS[name][0]
    return builder(None) if builder else "fluxprm-mini"


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_step_is_read_exactly_once_with_its_context(name):
    folder = _folder(name)
    full = _load(folder)
    item = _item()
    full_ids, _ = full.encode_ids(PROBLEM, STEPS)
    # a context of a third of the trace, and a context reserve of a fifth of it: several windows, some whose
    # context reaches back to the first step and some whose context does not
    small = _with_context_length(full, len(full_ids) // 3)
    context_tokens = len(full_ids) // 5
    fitted = encode_windows(small, item, context_tokens)
    windows, parts = fitted.windows, fitted.parts
    assert len(parts) >= 3 and not fitted.clipped
    assert all(len(p.input_ids) <= small.max_length for p in parts)
    # the windows' own steps partition the trace, in order, and each is read once
    assert [w.first_step for w in windows] == [0] + [w.end_step for w in windows[:-1]]
    assert windows[-1].end_step == len(STEPS)
    assert [len(p.read_positions) for p in parts] == [w.end_step - w.first_step for w in windows]
    assert all(len(set(p.read_positions)) == len(p.read_positions) for p in parts)
    assert [p.num_thinking for p in parts] == [max(0, min(w.end_step, len(THINKING)) - w.first_step)
                                               for w in windows]
    assert windows[-1].first_step <= len(THINKING)  # the last window scores the whole response
    outputs = small.forward(parts)
    full_rewards = full.forward([full.encode(item)])[0].step_rewards
    reference = FORMATS[name][1]
    reached_first, cut_before = 0, 0
    for w, out in zip(windows, outputs):
        shown = w.context(STEPS)
        if reference is not None:  # the model-card recipe fed exactly what the window shows
            expected = reference(folder, PROBLEM, shown + STEPS[w.first_step:w.end_step])[len(shown):]
        else:  # fluxprm-mini has no separate recipe: one forward of the same layout, all steps read
            ids, pos = full.encode_ids(PROBLEM, shown + STEPS[w.first_step:w.end_step])
            from fluxprm.models.base import Encoded

            expected = full.forward([Encoded(ids, pos, 0, signals=full.trace_signals(_item()))])[0].step_rewards[
                len(shown):]
        assert out.step_rewards == pytest.approx(expected, abs=1e-4)
        if w.context_from == 0 and w.clipped_context is None:  # all that precedes in view: the full-context reward
            assert out.step_rewards == pytest.approx(full_rewards[w.first_step:w.end_step], abs=1e-4)
            reached_first += w.first_step > 0
        else:
            cut_before += 1
    assert reached_first and cut_before  # both kinds of window were checked


def test_scoring_in_windows_reports_them_and_keeps_every_step():
    folder = build_qwen_prm(None)
    full = _load(folder)
    n_tokens = len(full.encode_ids(PROBLEM, STEPS)[0])
    small = _with_context_length(full, n_tokens // 2)
    fitted = fit_trace(small, _item(), "windows", DEFAULT_CONTEXT_TOKENS)
    [score] = fluxprm.score(small, [_item()], long="windows", batching="single")
    assert score.extra["windows"] == len(fitted.parts) >= 2 and not score.truncated
    assert score.step_rewards == pytest.approx([r for o in small.forward(fitted.parts) for r in o.step_rewards],
                                               abs=1e-5)
    assert len(score.thinking_step_rewards) == len(THINKING) and len(score.response_step_rewards) == len(RESPONSE)


@pytest.mark.parametrize("context_tokens", [0, 16, 48, 96])
def test_each_window_shows_the_problem_and_the_context_asked_for(context_tokens):
    folder = build_qwen_prm(None)
    full = _load(folder)
    n_tokens = len(full.encode_ids(PROBLEM, STEPS)[0])
    small = _with_context_length(full, max(n_tokens // 3, 200))
    fitted = encode_windows(small, _item(), context_tokens)
    assert len(fitted.parts) >= 2
    tok = small.tokenizer
    half_the_room = (small.max_length - len(small.encode_ids(PROBLEM, [])[0])) // 2 - 8
    for w, part in zip(fitted.windows, fitted.parts):
        text = tok.decode(part.input_ids)
        assert PROBLEM in text
        own = STEPS[w.first_step:w.end_step]
        shown = w.context(STEPS)
        own_length = len(small.encode_ids(PROBLEM, own)[0])
        # the context's size, counted independently of the window's own bookkeeping
        assert len(part.input_ids) - own_length == w.context_tokens
        assert w.context_tokens == len(small.encode_ids(PROBLEM, shown + own)[0]) - own_length
        for step in shown[1 if w.clipped_context is not None else 0:] + own:
            assert step in text
        if w.clipped_context is not None:  # a tail of the step before the whole ones
            tail = w.clipped_context.removeprefix("…")
            assert tail in text and STEPS[w.context_from].endswith(tail) and tail != STEPS[w.context_from]
        everything_before_in_view = w.context_from == 0 and w.clipped_context is None
        if not everything_before_in_view:  # context never takes more than half the room beside the problem
            assert w.context_tokens >= min(context_tokens, half_the_room)
    # the response is scored with as much before it in view as fits: nothing more would fit
    last, last_part = fitted.windows[-1], fitted.parts[-1]
    if last.context_from > 0:
        more = STEPS[last.context_from - 1:last.first_step] + STEPS[last.first_step:]
        assert len(small.encode_ids(PROBLEM, more)[0]) > small.max_length
    assert last.end_step == len(STEPS) and last.first_step <= len(THINKING)


def test_more_context_never_shows_less_and_zero_packs_windows_full():
    folder = build_qwen_prm(None)
    full = _load(folder)
    small = _with_context_length(full, len(full.encode_ids(PROBLEM, STEPS)[0]) // 3)
    counts = [len(encode_windows(small, _item(), c).parts) for c in (0, 24, 48)]
    assert counts == sorted(counts) and counts[0] < counts[-1]  # context costs windows
    with pytest.raises(ValueError, match="context_tokens"):
        ScoreOptions(context_tokens=-1)


# ------------------------------------------------------------------------------------------------ correlation
def _fixture_items(prm) -> list[PRMInput]:
    config = step_config_for(prm.trained_steps)
    items = []
    for i, line in enumerate(FIXTURE.read_text().splitlines()):
        [trace] = parse_record(json.loads(line), source=FIXTURE.name, line=i + 1)
        items.append(prepare(trace, config))
    return items


def _quoted(name: str) -> float:
    """A figure docs/LONG_TRACES.md quotes for this test, from its line ``test figure NAME: VALUE``."""
    match = re.search(rf"test figure {re.escape(name)}: \*?\*?([0-9.]+)", DOCS.read_text())
    assert match, f"docs/LONG_TRACES.md does not quote {name}"
    return float(match.group(1))


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / (sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y)) ** 0.5


WINDOW_LENGTH = 512  # = benchmarks/long_traces.py FIXTURE_WINDOW_LENGTH
CONTEXT_TOKENS = 128  # = FIXTURE_CONTEXT_TOKENS


def test_windows_correlate_with_full_context_scoring_as_the_docs_quote():
    full = _load("fluxprm-mini")
    small = _with_context_length(full, WINDOW_LENGTH)
    items = _fixture_items(full)
    ref_steps, got_steps, ref_scores, got_scores, windows = [], [], [], [], []
    for item in items:
        whole = fit_trace(full, item, "truncate")
        assert len(whole.parts) == 1 and whole.parts[0].dropped_thinking == 0  # fits the full context
        fitted = fit_trace(small, item, "windows", CONTEXT_TOKENS)
        windows.append(len(fitted.parts))
        [ref] = full.forward(whole.parts)
        outs = small.forward(fitted.parts)
        steps = [r for o in outs for r in o.step_rewards]
        assert len(steps) == item.num_steps
        ref_steps += ref.step_rewards
        got_steps += steps
        ref_scores.append(sum(ref.step_rewards) / len(ref.step_rewards) + ref.trajectory_reward)
        got_scores.append(sum(steps) / len(steps) + outs[-1].trajectory_reward)
    assert min(windows) >= 2  # every fixture trace is really windowed at this context
    assert _pearson(ref_steps, got_steps) == pytest.approx(_quoted("step_pearson"), abs=0.02)
    assert _pearson(ref_scores, got_scores) == pytest.approx(_quoted("score_pearson"), abs=0.02)
