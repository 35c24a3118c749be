"""The joint objective by hand, and label → train → score end to end with the embedded backbone."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fluxprm
from fluxprm import load_prm
from fluxprm.labels.pipeline import LabelConfig, run_label_job
from fluxprm.train import Example, Targets, TrainConfig, joint_loss, load_examples, train
from fluxprm.train import pos_weights as _pos_weights

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def _ex(targets, labels, traj, correct) -> Example:
    n = len(targets)
    return Example("e", "p", ["s"] * n, [], list(targets), list(labels), traj, correct)


def test_joint_loss_matches_hand_computation():
    cfg = TrainConfig(lambda_step=2.0, lambda_final=0.5, lambda_step_bce=1.0, lambda_outcome_bce=3.0)
    exs = [_ex([0.8, None], [None, 0.0], 0.25, None), _ex([0.1], [1.0], None, True)]
    step_logits = torch.tensor([0.0, 1.0, -1.0])
    traj_logits = torch.tensor([2.0, -0.5])
    total, terms = joint_loss(step_logits, traj_logits, Targets.of(exs), cfg)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    step_mse = ((sig(0.0) - 0.8) ** 2 + (sig(-1.0) - 0.1) ** 2) / 2
    final_mse = (sig(2.0) - 0.25) ** 2
    bce = lambda z, y: -(y * math.log(sig(z)) + (1 - y) * math.log(1 - sig(z)))  # noqa: E731
    step_bce = (bce(1.0, 0.0) + bce(-1.0, 1.0)) / 2
    outcome_bce = bce(-0.5, 1.0)
    assert terms["step_mse"] == pytest.approx(step_mse, rel=1e-5)
    assert terms["final_mse"] == pytest.approx(final_mse, rel=1e-5)
    assert terms["step_bce"] == pytest.approx(step_bce, rel=1e-5)
    assert terms["outcome_bce"] == pytest.approx(outcome_bce, rel=1e-5)
    expected = 2.0 * step_mse + 0.5 * final_mse + 1.0 * step_bce + 3.0 * outcome_bce
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_missing_terms_contribute_nothing():
    exs = [_ex([None], [None], None, None)]
    total, terms = joint_loss(torch.tensor([0.3]), torch.tensor([0.1]), Targets.of(exs), TrainConfig())
    assert float(total) == 0.0 and all(v == 0.0 for v in terms.values())


def test_pos_weights_balance_rare_classes():
    exs = [_ex([None] * 4, [1.0, 1.0, 1.0, 0.0], None, True), _ex([None], [1.0], None, False)]
    assert _pos_weights(exs, True) == (pytest.approx(0.25), pytest.approx(1.0))
    assert _pos_weights(exs, False) == (None, None)


def test_trace_files_become_examples_with_hard_labels():
    errors = []
    exs = list(load_examples([FIXTURES / "prmbench_train_sample.jsonl", FIXTURES / "qwen25math_pool_sample.jsonl"],
                             errors=errors))
    prm = [e for e in exs if any(lab == 0.0 for lab in e.step_labels)]
    pool = [e for e in exs if e.correct is not None]
    assert prm and pool and not errors
    assert all(len(e.step_labels) == len(e.steps) for e in exs)


def test_label_train_score_end_to_end(tmp_path):
    """fluxprm label (encoder components) → fluxprm train (a few steps) → fluxprm score -m CKPT."""
    rows = (FIXTURES / "skythought_amc23_sample.jsonl").read_text().splitlines()
    src = tmp_path / "sample.jsonl"  # without the two longest traces (lines 3, 4: 15K of the 26K characters)
    src.write_text("".join(rows[i] + "\n" for i in (0, 1, 4, 5, 6)))
    labels = tmp_path / "labels.jsonl"
    run_label_job([str(src)], labels, tmp_path / "label_errors.jsonl",
                  LabelConfig(judge=None, chunk_size=4, on_error="skip", cache=str(tmp_path / "llm.sqlite")))
    recs = [json.loads(x) for x in labels.read_text().splitlines()]
    assert recs and any(r["step_rewards"] and any(v is not None for v in r["step_rewards"]) for r in recs)

    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLUXPRM_CACHE": os.environ.get("FLUXPRM_CACHE", "")}
    env = {k: v for k, v in env.items() if v != ""}
    run = subprocess.run([sys.executable, "-m", "fluxprm", "train", str(labels), str(FIXTURES / "prmbench_train_sample.jsonl"),
                          "-o", str(ckpt), "--max-steps", "6", "--set", "batch_size=4", "--set", "max_length=1024",
                          "--set", "val_fraction=0", "--set", f"feature_cache={tmp_path / 'feats'}"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    assert (ckpt / "fluxprm_config.json").exists() and (ckpt / "heads.safetensors").exists()
    assert (ckpt / "loss.png").exists()
    # in a log each stage says where it ended (a LoRA run in nohup printed nothing until its last line)
    assert re.search(r"^training features (\d+)/\1  100%  \d+:\d\d elapsed$", run.stderr, re.M), run.stderr
    assert re.search(r"^training steps 6/6  100%  \d+:\d\d elapsed$", run.stderr, re.M), run.stderr
    log = [json.loads(x) for x in (ckpt / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)

    out = tmp_path / "scores.jsonl"
    run = subprocess.run([sys.executable, "-m", "fluxprm", "score", str(src), "-m", str(ckpt), "-o", str(out)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    scores = [json.loads(x) for x in out.read_text().splitlines()]
    assert scores
    for s in scores:
        assert s["trajectory_reward"] is not None
        mean = sum(s["step_rewards"]) / len(s["step_rewards"])
        assert s["score"] == pytest.approx(mean + s["trajectory_reward"], abs=1e-6)


def test_run_steps_tells_each_step_and_the_total():
    from fluxprm.train.loop import run_steps

    told: list[tuple[int, int]] = []
    cfg = TrainConfig(max_steps=5, batch_size=2)
    assert run_steps(3, cfg, lambda idx: (torch.tensor(1.0), {}), lambda entry: None,
                     on_step=lambda done, total: told.append((done, total))) == 5
    assert told == [(k, 5) for k in range(1, 6)]


def test_frozen_training_is_reproducible(tmp_path):
    """Two runs, each extracting its own features into its own cache, write identical heads: both feature
    extraction and head training are deterministic (a shared cache would only check the latter)."""
    files = [str(FIXTURES / "prmbench_train_sample.jsonl")]
    for run in ("a", "b"):
        cfg = TrainConfig(max_steps=4, batch_size=2, val_fraction=0.0, max_length=512,
                          feature_cache=str(tmp_path / f"feats_{run}"))
        train(files, tmp_path / run, cfg)
    cached = {run: sorted(p.name for p in (tmp_path / f"feats_{run}").iterdir()) for run in ("a", "b")}
    assert cached["a"] and cached["a"] == cached["b"]  # each run computed (not shared) the same entries
    for name in cached["a"]:
        assert (tmp_path / "feats_a" / name).read_bytes() == (tmp_path / "feats_b" / name).read_bytes()
    assert (tmp_path / "a" / "heads.safetensors").read_bytes() == (tmp_path / "b" / "heads.safetensors").read_bytes()
    [sa] = fluxprm.score(load_prm(str(tmp_path / "a"), dtype="float32"), [json.loads((FIXTURES / "prmbench_train_sample.jsonl").read_text().splitlines()[0])])
    assert sa.trajectory_reward is not None and len(sa.step_rewards) == sa.num_steps


@pytest.mark.filterwarnings("error::FutureWarning")  # none reaches a user of the newest transformers
def test_lora_training_saves_an_adapter_that_loads(tmp_path):
    files = [str(FIXTURES / "prmbench_train_sample.jsonl")]
    cfg = TrainConfig(mode="lora", max_steps=2, batch_size=2, max_length=256, lora_r=4)
    train(files, tmp_path / "lora", cfg)
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    prm = load_prm(str(tmp_path / "lora"), dtype="float32")
    [s] = fluxprm.score(prm, [json.loads(Path(files[0]).read_text().splitlines()[1])])
    assert all(0.0 <= r <= 1.0 for r in s.step_rewards)


@pytest.mark.filterwarnings("error::FutureWarning")  # none reaches a user of the newest transformers
def test_gradient_checkpointing_trains_the_same_weights(tmp_path, monkeypatch):
    """``gradient_checkpointing`` trades compute for memory and nothing else: LoRA training with it writes the
    adapter and heads that training without it writes (same seed; recomputation replays the RNG state)."""
    import transformers.modeling_utils as modeling_utils

    files = [str(FIXTURES / "prmbench_train_sample.jsonl")]
    real_checkpoint, recomputed = modeling_utils.checkpoint, []

    def counting_checkpoint(*args, **kwargs):
        recomputed.append(1)
        return real_checkpoint(*args, **kwargs)

    runs = {}
    for checkpointing in (False, True):
        if checkpointing:  # transformers binds its checkpoint function when checkpointing is enabled
            monkeypatch.setattr(modeling_utils, "checkpoint", counting_checkpoint)
        cfg = TrainConfig(mode="lora", max_steps=2, batch_size=2, max_length=192, lora_r=4,
                          gradient_checkpointing=checkpointing)
        out = tmp_path / f"ckpt_{checkpointing}"
        train(files, out, cfg)
        runs[checkpointing] = {name: load_file(out / name)
                               for name in ("adapter_model.safetensors", "heads.safetensors")}
    for name, tensors in runs[False].items():
        assert tensors.keys() == runs[True][name].keys()
        for key, value in tensors.items():
            torch.testing.assert_close(runs[True][name][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}:{key}")
    assert recomputed  # the second run really went through checkpointed layers
    adapter = runs[False]["adapter_model.safetensors"]
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # training moved the adapter


def test_a_base_given_as_a_relative_folder_loads_from_anywhere(tmp_path, monkeypatch):
    """`fluxprm train ... --base ./tinyqwen` recorded "./tinyqwen", which a checkpoint reads as a folder inside
    itself: score, export and serve then died with a FileNotFoundError traceback. The base is now recorded as
    its absolute path, and a checkpoint whose backbone is missing is one error naming it."""
    import shutil

    from fluxprm.embedded import smollm2_dir
    from fluxprm.models.resolve import ModelNotFound

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mybase").symlink_to(smollm2_dir(), target_is_directory=True)
    cfg = TrainConfig(base="./mybase", max_steps=2, batch_size=2, val_fraction=0.0, max_length=256,
                      feature_cache=str(tmp_path / "feats"))
    train([str(FIXTURES / "prmbench_train_sample.jsonl")], tmp_path / "ckpt", cfg)
    recorded = json.loads((tmp_path / "ckpt" / "fluxprm_config.json").read_text())["base"]
    assert recorded == str((tmp_path / "mybase").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    prm = load_prm(str(tmp_path / "ckpt"), dtype="float32")
    [s] = fluxprm.score(prm, [json.loads((FIXTURES / "prmbench_train_sample.jsonl").read_text().splitlines()[0])])
    assert s.trajectory_reward is not None
    shutil.copytree(tmp_path / "ckpt", tmp_path / "moved")  # a full fine-tune's ./backbone left behind
    config = json.loads((tmp_path / "moved" / "fluxprm_config.json").read_text())
    (tmp_path / "moved" / "fluxprm_config.json").write_text(json.dumps({**config, "base": "./backbone"}))
    with pytest.raises(ModelNotFound, match=r"its backbone \(base './backbone' in .*\) is missing"):
        load_prm(str(tmp_path / "moved"), dtype="float32")
