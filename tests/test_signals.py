"""Trajectory signals: their values on hand-made traces, and a trained signal head reaching every scoring path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fluxprm
from fluxprm import load_prm
from fluxprm.signals import SIGNALS, trace_signals
from fluxprm.steps import PRMInput, prepare, step_config_for
from fluxprm.train import TrainConfig, train
from fluxprm.train.config import ConfigError
from fluxprm.traces import iter_traces

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
SKY = FIXTURES / "skythought_amc23_sample.jsonl"


def test_answer_stated_reads_the_final_text():
    assert SIGNALS["answer_stated"](PRMInput("p", [], ["So x = 2.", "The answer is $\\boxed{2}$."])) == 1.0
    assert SIGNALS["answer_stated"](PRMInput("p", [], ["Therefore, the final answer is: 7"])) == 1.0
    assert SIGNALS["answer_stated"](PRMInput("p", [], ["Let x be the number.", "Then 2x = 4."])) == 0.0
    # a thinking trace cut off before its response: its tail counts, an early box far from the end does not
    early = PRMInput("p", ["maybe \\boxed{3}?", "x" * 2000, "hmm, still working"], [])
    assert SIGNALS["answer_stated"](early) == 0.0
    assert SIGNALS["answer_stated"](PRMInput("p", ["x" * 2000, "so it is \\boxed{3}"], [])) == 1.0


def test_unfinished_hesitation_and_length():
    cut = PRMInput("p", ["Let me think.", "Wait, that is wrong."], [])
    done = PRMInput("p", ["Let me think."], ["It is 4."])
    assert SIGNALS["unfinished_thinking"](cut) == 1.0
    assert SIGNALS["unfinished_thinking"](done) == 0.0
    assert SIGNALS["unfinished_thinking"](PRMInput("p", [], ["It is 4."])) == 0.0
    text = "Let me think.\n\nWait, that is wrong."
    assert SIGNALS["hesitation_rate"](cut) == pytest.approx(1000 / len(text))
    assert SIGNALS["hesitation_rate"](PRMInput("p", [], ["Hmm. Wait. Alternatively, let me double-check."])) \
        == pytest.approx(1000 * 4 / len("Hmm. Wait. Alternatively, let me double-check."))
    assert SIGNALS["log_chars"](done) == pytest.approx(math.log1p(len("Let me think.\n\nIt is 4.")))
    assert trace_signals(done, ["log_chars", "unfinished_thinking"]) == [math.log1p(23), 0.0]


def test_unknown_signal_is_a_config_error():
    with pytest.raises(ConfigError, match="trajectory_signals"):
        TrainConfig(trajectory_signals=["answer_stated", "vibes"])


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_trained_signal_head_reaches_scores_on_every_path(tmp_path):
    """Train frozen heads with all signals on the Sky-T1 sample, then score through the engine, truncated and in
    windows: the trajectory logit minus the same model's logit with the signal weights zeroed must equal the
    signal term computed by hand from the trace — so the signals of the *whole* trace reach the head on both
    layouts (a window sees only part of the trace, but its signals are the trace's)."""
    names = list(SIGNALS)
    cfg = TrainConfig(max_steps=6, batch_size=2, val_fraction=0.0, max_length=512, trajectory_signals=names,
                      feature_cache=str(tmp_path / "feats"))
    summary = train([str(SKY)], tmp_path / "ckpt", cfg)
    assert summary["train"] >= 4
    config = json.loads((tmp_path / "ckpt" / "fluxprm_config.json").read_text())
    assert config["trajectory_signals"] == names and config["version"] == 2  # older readers would ignore signals
    heads = load_file(str(tmp_path / "ckpt" / "heads.safetensors"))
    weight = heads["signal_head.linear.weight"]
    assert weight.shape == (1, len(names)) and bool(weight.abs().sum() > 0)  # trained away from its zero init
    assert not torch.equal(heads["signal_head.std"], torch.ones(len(names)))  # standardised by the data

    prm = load_prm(str(tmp_path / "ckpt"), dtype="float32")
    # 4 traces keep the test short (each is scored 4 times): windowed (line 1), cut off in thought (line 3, whose
    # 7,580 characters are shortened to 1,200: still cut off, a seventh of the cost), short (5, 6)
    rows = [json.loads(line) for line in SKY.read_text().splitlines()]
    cut_off = dict(rows[2], response=rows[2]["response"][:1200])
    assert "</think>" not in cut_off["response"] and "<|end_of_thought|>" not in cut_off["response"]
    picked = tmp_path / "picked.jsonl"
    picked.write_text("".join(json.dumps(r) + "\n" for r in (rows[0], cut_off, rows[4], rows[5])))
    traces = list(iter_traces([str(picked)]))
    steps = step_config_for(prm.trained_steps)
    by_line = {t.line: t for t in traces}
    assert trace_signals(prepare(by_line[2], steps), ["unfinished_thinking"]) == [1.0]
    for long in ("truncate", "windows"):  # truncate skips the traces whose response alone exceeds 512 tokens
        with_signals = fluxprm.score(prm, traces, long=long, on_error="skip")
        saved = prm.signal_head.linear.weight.detach().clone()
        prm.signal_head.linear.weight.data.zero_()
        try:
            without = fluxprm.score(prm, traces, long=long, on_error="skip")
        finally:
            prm.signal_head.linear.weight.data.copy_(saved)
        assert len(with_signals) == len(without) >= 2
        windowed = [s.extra.get("windows", 1) > 1 for s in with_signals]
        assert any(windowed) == (long == "windows")  # the long Sky-T1 traces do not fit 512 tokens
        for a, b in zip(with_signals, without):
            assert a.line == b.line
            sig = torch.tensor(trace_signals(prepare(by_line[a.line], steps), names))
            expected = float(((sig - prm.signal_head.mean) / prm.signal_head.std) @ saved[0])
            assert _logit(a.trajectory_reward) - _logit(b.trajectory_reward) == pytest.approx(expected, abs=2e-3)


def test_a_checkpoint_from_a_newer_fluxprm_is_refused(tmp_path):
    from fluxprm.models.fluxprm_format import CONFIG_NAME, FluxPRMConfig

    FluxPRMConfig().save(tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["version"] == 1  # no signals: readable by v1 readers
    data = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(ValueError, match="version 3.*upgrade fluxprm"):
        FluxPRMConfig.load(tmp_path)
