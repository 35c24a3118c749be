"""`fluxprm train` under bad input: no NaN weights, no endless loop, no traceback, bad records rejected one by one.

Each test trains (when it trains at all) a few steps on the tiny Qwen2 backbone of ``builders`` (2 layers,
hidden 32, the real Qwen2.5 tokenizer), so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import fluxprm
from builders import TINY, build_qwen_prm
from fluxprm import load_prm
from fluxprm.train import (ConfigError, NoTrainingData, TrainConfig, TrainError, TrainingDiverged, parse_overrides,
                           train)
from fluxprm.train import loop as train_loop
from fluxprm.train.plots import kept_epochs

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


@pytest.fixture(scope="module")
def base() -> str:
    return str(build_qwen_prm(None))  # the shared cached copy: training only reads it


def _cfg(base: str, tmp_path: Path, **kw) -> TrainConfig:
    opts = dict(base=base, max_steps=3, batch_size=2, val_fraction=0.0, max_length=256, dtype="float32",
                head_hidden=16, feature_cache=str(tmp_path / "feats"))
    return TrainConfig(**{**opts, **kw})


def _record(i: int, **changes) -> dict:
    """A well-formed label record (the shape `fluxprm label` writes), with ``changes`` applied."""
    rec = {"id": f"r{i}", "problem": f"What is {i} + {i}?",
           "thinking_steps": [f"I add {i} and {i} together.", "Then I check the sum once more."],
           "response_steps": [f"The answer is {2 * i}."], "step_rewards": [0.8, 0.6, None], "step_labels": None,
           "trajectory_reward": 0.7, "correct": True}
    rec.update(changes)
    return rec


def _write(path: Path, records: list[dict]) -> Path:
    # json.dumps writes NaN / Infinity as the bare literals Python (and the audit) produce
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _heads_finite(folder: Path) -> bool:
    return all(bool(t.isfinite().all()) for t in load_file(str(folder / "heads.safetensors")).values())


BAD_RECORDS = [  # (change to a good record, words the rejection must contain)
    ({"step_rewards": [float("nan"), 0.5, None]}, "step_rewards[0] is nan"),
    ({"trajectory_reward": float("inf")}, "trajectory_reward is inf"),
    ({"step_rewards": [5.0, 0.5, None]}, "step_rewards[0] is 5.0"),
    ({"trajectory_reward": -3.0}, "trajectory_reward is -3.0"),
    ({"trajectory_reward": "high"}, "trajectory_reward must be a number"),
    ({"correct": "maybe"}, "correct must be true, false, 0, 1"),
    ({"correct": 2}, "correct must be true, false, 0, 1"),
    ({"thinking_steps": "a string"}, "'thinking_steps' must be a list of strings"),
    ({"response_steps": ["ok", 3]}, "response_steps[1] must be a string"),
    ({"problem": None}, "'problem' is missing"),
    ({"problem": ""}, "'problem' must be a non-empty string"),
    ({"step_rewards": [0.5, 0.5, 0.5, 0.5]}, "'step_rewards' has 4 values for 3 steps"),
    ({"step_labels": [1, "bad", None]}, "step_labels[1] must be a number"),
    ({"step_rewards": None, "trajectory_reward": None, "correct": None}, "no training target"),
]


def test_bad_label_records_go_to_the_errors_file_and_the_rest_trains(base, tmp_path):
    good = [_record(i) for i in range(4)]
    bad = [_record(100 + k, **change) for k, (change, _) in enumerate(BAD_RECORDS)]
    labels = _write(tmp_path / "labels.jsonl", good[:2] + bad + good[2:])
    out = tmp_path / "ckpt"
    summary = train([str(labels)], out, _cfg(base, tmp_path))

    assert summary["examples"] == len(good) and summary["rejected"] == len(bad)
    assert summary["errors"] == str(out / "rejected.jsonl")
    rows = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(3, 3 + len(bad)))  # input order, one per bad record
    for row, rec, (_, words) in zip(rows, bad, BAD_RECORDS):
        assert set(row) == {"source", "line", "id", "error"}
        assert row["source"] == str(labels) and row["id"] == rec["id"]
        assert words in row["error"], (words, row["error"])
    assert summary["rejection_causes"] and summary["rejection_causes"][0]["count"] >= 1

    assert _heads_finite(out)  # one NaN target used to make every head weight NaN, with exit code 0
    [scored] = fluxprm.score(load_prm(str(out), dtype="float32"), [{"problem": "What is 2 + 2?",
                                                                    "steps": ["2 + 2 = 4.", "The answer is 4."]}])
    assert scored.score is not None and math.isfinite(scored.score)


def test_nan_and_inf_targets_never_reach_the_weights(base, tmp_path):
    """The audit's case: one NaN step reward and one infinite trajectory reward among good records."""
    labels = _write(tmp_path / "labels.jsonl", [_record(1), _record(2, step_rewards=[math.nan, 0.5, None]),
                                                _record(3), _record(4, trajectory_reward=math.inf), _record(5)])
    summary = train([str(labels)], tmp_path / "ckpt", _cfg(base, tmp_path))
    assert _heads_finite(tmp_path / "ckpt")  # it used to write NaN heads, with exit code 0
    assert summary["train"] == 3 and summary["rejected"] == 2
    log = [json.loads(x) for x in (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log if "loss" in r)


def test_each_head_keeps_the_epoch_of_its_own_best_held_out_loss(base, tmp_path):
    """The loss is a sum of step-head and trajectory-head terms, so each head is kept at the epoch where its own
    held-out terms were lowest (logged per epoch), and the summary names both epochs."""
    rng = random.Random(3)
    records = [_record(i, step_rewards=[rng.random(), rng.random(), None], trajectory_reward=rng.random(),
                       correct=rng.random() < 0.5) for i in range(40)]
    labels = _write(tmp_path / "labels.jsonl", records)
    cfg = _cfg(base, tmp_path, max_steps=None, epochs=6, val_fraction=0.3, lr=0.05)
    train([str(labels)], tmp_path / "ckpt", cfg)
    log = [json.loads(x) for x in (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "val_loss" in r]
    [final] = [r for r in log if "best_step_step" in r]
    assert len(epochs) == 6
    weights = {"step_mse": cfg.lambda_step, "step_bce": cfg.lambda_step_bce, "final_mse": cfg.lambda_final,
               "outcome_bce": cfg.lambda_outcome_bce}
    for head, terms in (("step", ("step_mse", "step_bce")), ("trajectory", ("final_mse", "outcome_bce"))):
        part = [sum(weights[t] * r[f"val_{t}"] for t in terms) for r in epochs]
        best = min(range(len(epochs)), key=part.__getitem__)
        assert final[f"best_{head}_step"] == epochs[best]["step"]
        assert final[f"best_{head}_val_loss"] == pytest.approx(part[best])
    assert all(r["val_loss"] == pytest.approx(sum(weights[t] * r[f"val_{t}"] for t in weights)) for r in epochs)
    # loss.png marks the kept epochs, read from the same log entries
    assert kept_epochs(log) == {"step": final["best_step_step"], "trajectory": final["best_trajectory_step"]}


def test_the_checkpoint_records_a_first_error_threshold_chosen_on_held_out_rows(base, tmp_path):
    """`fluxprm eval processbench` reads it as this model's default: the threshold maximising first-error F1 on
    the held-out examples with step labels, which the heads never fitted — not a fixed 0.5."""
    from fluxprm.metrics import best_threshold, first_error_of_labels
    from fluxprm.models.fluxprm_config import recorded_error_threshold
    from fluxprm.steps import StepConfig
    from fluxprm.train.loop import heldout_bucket

    rng = random.Random(5)
    records = []
    for i in range(60):
        wrong = rng.choice([None, 0, 1, 2])  # the first wrong step, or none
        labels = [None if wrong is not None and k > wrong else float(wrong != k) for k in range(3)]
        records.append(_record(i, step_rewards=None, step_labels=labels, trajectory_reward=None,
                               correct=wrong is None))
    data = _write(tmp_path / "labels.jsonl", records)
    summary = train([str(data)], tmp_path / "ckpt", _cfg(base, tmp_path, max_steps=None, epochs=3, val_fraction=0.4))
    recorded = recorded_error_threshold(str(tmp_path / "ckpt"))
    held = [r for r in records if heldout_bucket(r["problem"]) < 0.4]
    assert recorded is not None and summary["error_threshold"]["samples"] == len(held) > 10
    as_traces = [{"problem": r["problem"], "thinking": "\n\n".join(r["thinking_steps"]),
                  "response": "\n\n".join(r["response_steps"])} for r in held]
    scored = fluxprm.score(load_prm(str(tmp_path / "ckpt"), dtype="float32"), as_traces,
                           steps=StepConfig(min_chars=0))  # the label records' own steps, none merged
    assert [s.num_steps for s in scored] == [3] * len(held)
    expected = best_threshold([s.step_rewards for s in scored], [first_error_of_labels(r["step_labels"]) for r in held])
    assert recorded == pytest.approx(expected, abs=1e-4)

    # no step labels (as the next test's data): nothing to choose on, nothing recorded
    unlabelled = _write(tmp_path / "soft.jsonl", [_record(i) for i in range(20)])
    summary = train([str(unlabelled)], tmp_path / "soft", _cfg(base, tmp_path, val_fraction=0.4))
    assert summary["error_threshold"] is None and recorded_error_threshold(str(tmp_path / "soft")) is None


def test_errors_file_can_be_named_and_a_clean_run_leaves_none(base, tmp_path):
    labels = _write(tmp_path / "labels.jsonl", [_record(1), _record(2, correct="maybe"), _record(3)])
    errors = tmp_path / "elsewhere" / "bad.jsonl"
    summary = train([str(labels)], tmp_path / "a", _cfg(base, tmp_path), errors_path=errors)
    assert summary["rejected"] == 1 and summary["errors"] == str(errors)
    assert json.loads(errors.read_text())["line"] == 2 and not (tmp_path / "a" / "rejected.jsonl").exists()

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rejected.jsonl").write_text('{"stale": true}\n')  # from an earlier run on other data
    clean = _write(tmp_path / "clean.jsonl", [_record(1), _record(3)])
    summary = train([str(clean)], tmp_path / "b", _cfg(base, tmp_path))
    assert summary["rejected"] == 0 and summary["errors"] is None
    assert not (tmp_path / "b" / "rejected.jsonl").exists()

    with pytest.raises(ValueError, match="is the input file"):  # never overwrite an input with rejections
        train([str(labels)], tmp_path / "c", _cfg(base, tmp_path), errors_path=labels)


def test_every_record_rejected_is_an_error_naming_the_commonest_cause(base, tmp_path):
    labels = _write(tmp_path / "labels.jsonl", [_record(1, correct="maybe"), _record(2, trajectory_reward=float("nan")),
                                                _record(3, trajectory_reward=float("nan"))])
    with pytest.raises(NoTrainingData) as info:
        train([str(labels)], tmp_path / "ckpt", _cfg(base, tmp_path))
    message = str(info.value)
    assert "\n" not in message and "none of the 3 records" in message
    assert f"(2 of them): {labels}:2: trajectory_reward is nan" in message
    assert str(tmp_path / "ckpt" / "rejected.jsonl") in message
    assert len((tmp_path / "ckpt" / "rejected.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "ckpt" / "heads.safetensors").exists()


def test_diverging_loss_stops_the_run_and_saves_nothing(base, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = train_loop.joint_loss

    def loss_that_goes_nan(*args, **kwargs):
        total, terms = real_loss(*args, **kwargs)
        calls["n"] += 1
        return (total * math.nan, terms) if calls["n"] == 3 else (total, terms)

    monkeypatch.setattr(train_loop, "joint_loss", loss_that_goes_nan)
    labels = _write(tmp_path / "labels.jsonl", [_record(i) for i in range(4)])
    out = tmp_path / "runs" / "ckpt"
    with pytest.raises(TrainingDiverged, match="diverged at step 3: the loss is nan") as info:
        train([str(labels)], out, _cfg(base, tmp_path, max_steps=5))
    assert info.value.step == 3 and isinstance(info.value, TrainError)
    assert not out.exists()  # no checkpoint, no log, no half-written folder
    assert list((tmp_path / "runs").iterdir()) == []  # and no staging folder left behind


def test_non_finite_weights_after_the_last_step_are_not_saved(base, tmp_path, monkeypatch):
    real = train_loop._train_frozen

    def poisoned(prm, *args, **kwargs):
        steps = real(prm, *args, **kwargs)
        next(prm.traj_head.parameters()).data.fill_(math.inf)  # as if the last update had overflowed
        return steps

    monkeypatch.setattr(train_loop, "_train_frozen", poisoned)
    labels = _write(tmp_path / "labels.jsonl", [_record(i) for i in range(4)])
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "heads.safetensors").write_bytes(b"a good checkpoint from before")
    with pytest.raises(TrainingDiverged, match="trajectory head weight .* is not finite after step 3"):
        train([str(labels)], tmp_path / "ckpt", _cfg(base, tmp_path))
    assert (tmp_path / "ckpt" / "heads.safetensors").read_bytes() == b"a good checkpoint from before"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["heads.safetensors"]


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_examples_too_long_for_max_length_are_rejected_and_named(base, tmp_path, mode):
    long_problem = "Count every word of this sentence carefully please. " * 40
    labels = _write(tmp_path / "labels.jsonl", [_record(1), _record(2, problem=long_problem), _record(3)])
    summary = train([str(labels)], tmp_path / "ckpt", _cfg(base, tmp_path, mode=mode, max_length=96))
    assert summary["train"] == 2 and summary["rejected"] == 1 and summary["too_long"] == 1
    [row] = [json.loads(x) for x in (tmp_path / "ckpt" / "rejected.jsonl").read_text().splitlines()]
    assert row["line"] == 2 and row["id"] == "r2"
    assert row["error"].startswith("longer than max_length=96 tokens") and "raise max_length" in row["error"]


def test_no_batch_can_be_formed_is_an_error_not_an_endless_loop(base, tmp_path):
    files = [str(FIXTURES / "prmbench_train_sample.jsonl")]
    with pytest.raises(NoTrainingData) as info:
        train(files, tmp_path / "ckpt", _cfg(base, tmp_path, max_length=5))
    assert str(info.value).startswith("all 5 examples are longer than max_length=5 tokens")
    assert "raise max_length" in str(info.value)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got -1"):
        _cfg(base, tmp_path, batch_size=-1)
    cfg = _cfg(base, tmp_path)
    cfg.batch_size = -1  # assigned after construction: train() checks again before starting
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        train(files, tmp_path / "ckpt", cfg)


@pytest.mark.parametrize("option, value, words", [
    ("batch_size", 0, "batch_size must be >= 1, got 0"),
    ("batch_size", "abc", "batch_size: expected an integer, got 'abc'"),
    ("batch_size", True, "batch_size: expected an integer, got True"),
    ("grad_accum", 0, "grad_accum must be >= 1"),
    ("epochs", 0, "epochs must be >= 1"),
    ("max_steps", 0, "max_steps must be null or >= 1"),
    ("lr", "fast", "lr: expected a number, got 'fast'"),
    ("lr", 0.0, "lr must be > 0"),
    ("lr", math.nan, "lr: expected a finite number"),
    ("val_fraction", 1.0, "val_fraction must be in [0, 1)"),
    ("val_fraction", -0.1, "val_fraction must be in [0, 1)"),
    ("feature_layers", [], "feature_layers must be a non-empty list"),
    ("feature_layers", [-1, "x"], "feature_layers[1]: expected an integer"),
    ("lora_targets", 5, "lora_targets: expected a list of strings, got 5"),
    ("lora_targets", ["q_proj", 3], "lora_targets[1]: expected a string"),
    ("mode", "partial", "mode must be one of frozen, lora, full"),
    ("layout", "fancy", "layout must be one of chat, qwen-prm"),
    ("head_type", "big", "head_type must be one of mlp, qwen-prm"),
    ("dtype", "float8", "dtype must be one of auto"),
    ("aggregate", "median", "aggregate must be one of"),
    ("max_examples", 0, "max_examples must be null or >= 1"),
    ("feature_cache", 3, "feature_cache: expected a string or null"),
])
def test_every_option_is_type_and_range_checked(option, value, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{option: value})
    assert words in str(info.value) and "\n" not in str(info.value)
    assert info.value.option == option


def test_numbers_are_read_the_way_users_write_them():
    cfg = TrainConfig(lr=1, alpha=2, max_steps=None)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.alpha == 2.0
    assert parse_overrides(["lr=1e-3", "max-steps=5", "feature_layers=[-1, -2]", "max_examples="]) == {
        "lr": 0.001, "max_steps": 5, "feature_layers": [-1, -2], "max_examples": None}  # YAML 1.1 reads 1e-3 as text


@pytest.mark.parametrize("text, words", [
    ("batch_size: 4\nlr: [1, 2\nepochs: 3\n", "line 3 column 7: invalid YAML: expected ',' or ']'"),
    ("- batch_size\n- 4\n", "expected a mapping of option: value"),
    ("just a string\n", "expected a mapping of option: value"),
    ("epochs: 2\nlr: fast\n", "line 2: lr: expected a number, got 'fast'"),
    ("batch_size: abc\n", "line 1: batch_size: expected an integer, got 'abc'"),
    ("seed: 1\nbatch_size: 0\n", "line 2: batch_size must be >= 1, got 0"),
    ("lora_targets: 5\n", "line 1: lora_targets: expected a list of strings"),
    ("batchsize: 8\n", "unknown training option 'batchsize' (did you mean batch_size?)"),
    # YAML keeps the last of two equal keys without a word: the run was not the one the file seemed to ask for
    ("max_steps: 10\nlr: 1e-4\nmax_steps: 20\n", "line 3: option 'max_steps' is given twice (first at line 1)"),
])
def test_config_file_errors_name_the_file_and_line(tmp_path, text, words):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value) and "\n" not in str(info.value)


def test_unsafe_yaml_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'lr: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r"line 1: YAML tag !!python/object/apply:os.system is not allowed.*"
                                          "nothing was executed"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="--set lr: YAML tag !!python/object/apply:os.system is not allowed"):
        parse_overrides([f'lr=!!python/object/apply:os.system ["touch {marker}"]'])
    assert not marker.exists()
    with pytest.raises(ConfigError, match="config file .* not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("items, words", [
    (["batch_size=["], "--set batch_size: '[' is not a valid YAML value"),
    (["lora_targets=5"], "--set lora_targets: expected a list of strings, got 5"),
    (["lr=fast"], "--set lr: expected a number, got 'fast'"),
    (["batch_size"], "--set expects KEY=VALUE"),
    (["bach_size=3"], "--set: unknown training option 'bach_size' (did you mean batch_size?)"),
])
def test_set_overrides_are_parsed_and_checked_naming_the_option(items, words):
    with pytest.raises(ConfigError) as info:
        parse_overrides(items)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unknown_base_or_layer_fails_before_any_work(base, tmp_path):
    labels = _write(tmp_path / "labels.jsonl", [_record(1)])
    with pytest.raises(ConfigError, match="base: /nonexistent does not exist; give smollm2") as info:
        train([str(labels)], tmp_path / "a", TrainConfig(base="/nonexistent"))
    assert info.value.option == "base" and isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="base: model 'no-such-model' is neither a folder nor a known name"):
        train([str(labels)], tmp_path / "a", TrainConfig(base="no-such-model"))
    layers = TINY["num_hidden_layers"]
    with pytest.raises(ConfigError, match=rf"feature_layers \[99\] out of range: the backbone .* has {layers} layers"):
        train([str(labels)], tmp_path / "b", _cfg(base, tmp_path, feature_layers=[99]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "feats").exists()


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fluxprm", "train", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)


def test_cli_config_errors_are_one_line_not_a_traceback(base, tmp_path):
    labels = _write(tmp_path / "labels.jsonl", [_record(1), _record(2)])
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lr: [1, 2\n")
    for args in (["--config", str(bad_yaml)], ["--set", "batch_size=-1"], ["--base", "/nonexistent"],
                 ["--base", base, "--set", "feature_layers=[99]"]):
        run = _cli(str(labels), "-o", str(tmp_path / "ckpt"), *args, tmp_path=tmp_path)
        assert run.returncode == 2, (args, run.stderr)
        assert "Traceback" not in run.stderr and run.stderr.startswith("error: "), (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (args, run.stderr)
    assert not (tmp_path / "ckpt").exists()


def test_empty_labelled_steps_are_dropped_with_their_labels_unless_one_is_the_error(tmp_path):
    """Segmentation drops empty explicit steps; their labels go with them so the rest stay aligned. An empty
    step labelled bad could be the first error, so such a record is refused, naming the step."""
    from fluxprm.steps import StepConfig
    from fluxprm.train.data import load_examples

    steps = ["x + 1 = 2.", "", "So x = 1."]
    rows = _write(tmp_path / "pb.jsonl", [{"id": "ok", "problem": "Find x.", "steps": steps, "label": -1},
                                          {"id": "bad", "problem": "Find x.", "steps": steps, "label": 1}])
    errors: list = []
    [ex] = list(load_examples([str(rows)], StepConfig(), errors))
    assert ex.id == "ok" and ex.response_steps == ["x + 1 = 2.", "So x = 1."] and ex.step_labels == [1.0, 1.0]
    [bad] = errors
    assert bad.line == 2 and "step(s) [2] are empty but labelled bad" in bad.error, bad.error


@pytest.mark.parametrize("extra, words", [
    ({"step_rewards": [0.5]}, "field 'step_rewards' is read from label records only"),
    ({"trajectory_reward": 0.9, "correct": True}, "field 'trajectory_reward' is read from label records only"),
    ({"step_labels": [1], "correct": float("inf")}, "correct must be true, false, 0, 1 or null, got inf"),
    ({"step_labels": [1], "is_correct": "maybe"}, "is_correct must be true, false, 0, 1 or null, got 'maybe'"),
])
def test_a_trace_record_with_targets_it_cannot_carry_is_rejected_saying_why(tmp_path, extra, words):
    """A trace-shaped record's step_rewards were dropped and the record rejected as "no training target: …
    step_rewards … missing"; a correct of inf on one was ignored and the record trained on."""
    from fluxprm.train.data import load_examples

    path = _write(tmp_path / "t.jsonl", [{"id": "g", "problem": "What is 2+2?", "steps": ["x. y"], **extra},
                                         {"id": "ok", "problem": "What is 2+2?", "steps": ["x. y"], "step_labels": [1],
                                          "correct": "yes"}])
    errors: list = []
    kept = list(load_examples([path], errors=errors))
    assert [e.id for e in kept] == ["ok"] and kept[0].correct is True
    [bad] = errors
    assert bad.line == 1 and words in bad.error, bad.error
