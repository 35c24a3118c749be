"""fluxprm train (qwen-prm layout and head) → fluxprm export --format qwen-prm → loads as qwen-prm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders import build_qwen_prm, ref_qwen_prm
import fluxprm
from fluxprm import load_prm
from fluxprm.export import export_qwen_prm
from fluxprm.models import detect_format
from fluxprm.models.bundled import bundled_model_dir
from fluxprm.train import TrainConfig, train

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
PROBLEM = "What is the base-ten number represented by the base-eight number 31?"
STEPS = ["$31_8 = 3 \\cdot 8 + 1$.", "That is $24 + 1 = 25$.", "The answer is \\boxed{25}."]


def test_export_round_trip(tmp_path):
    base = build_qwen_prm(tmp_path / "base")  # a Qwen2 backbone whose tokenizer has <extra_0>
    cfg = TrainConfig(base=str(base), layout="qwen-prm", head_type="qwen-prm", feature_layers=[-1], max_steps=3,
                      batch_size=2, val_fraction=0.0, max_length=512, dtype="float32",
                      feature_cache=str(tmp_path / "feats"))
    train([str(FIXTURES / "prmbench_train_sample.jsonl")], tmp_path / "ckpt", cfg)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "fluxprm", "export", str(tmp_path / "ckpt"), "-o", str(tmp_path / "qwen"),
                          "--format", "qwen-prm"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    exported = tmp_path / "qwen"
    assert detect_format(exported) == "qwen-prm"
    assert json.loads((exported / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]

    [src] = fluxprm.score(load_prm(str(tmp_path / "ckpt"), dtype="float32"), [{"problem": PROBLEM, "steps": STEPS}])
    [dst] = fluxprm.score(load_prm(str(exported), dtype="float32"), [{"problem": PROBLEM, "steps": STEPS}])
    assert dst.step_rewards == pytest.approx(src.step_rewards, abs=1e-4)
    # and the independent model-card reference reads the exported folder the same way
    assert ref_qwen_prm(exported, PROBLEM, STEPS) == pytest.approx(src.step_rewards, abs=1e-4)


def test_export_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="layout.*head_type.*backbone"):
        export_qwen_prm(bundled_model_dir("fluxprm-mini"), tmp_path / "x")


def test_export_of_a_checkpoint_whose_backbone_is_missing_is_one_line(tmp_path):
    """A full fine-tune's `./backbone` left behind when the checkpoint was copied: a FileNotFoundError traceback."""
    import shutil

    ckpt = tmp_path / "copied"
    shutil.copytree(bundled_model_dir("fluxprm-mini"), ckpt)
    config = json.loads((ckpt / "fluxprm_config.json").read_text())
    (ckpt / "fluxprm_config.json").write_text(json.dumps({**config, "base": "./backbone"}))
    done = subprocess.run([sys.executable, "-m", "fluxprm", "export", str(ckpt), "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "its backbone" in done.stderr


def test_export_refuses_an_output_that_is_the_checkpoint_or_a_file_before_loading(tmp_path):
    """``-o CKPT`` wrote the export's files into the checkpoint itself (exit 0); ``-o a_file`` died in a
    FileExistsError traceback."""
    from fluxprm.jobs import OutputPathError

    ckpt = bundled_model_dir("fluxprm-mini")
    (tmp_path / "a_file").write_text("")
    for out, words in ((ckpt, "is the checkpoint folder"), (tmp_path / "a_file", "a_file is a file; give a folder"),
                       (tmp_path / "a_file" / "x", "a_file is a file, not a folder")):
        with pytest.raises(OutputPathError, match=words):
            export_qwen_prm(ckpt, out)
    done = subprocess.run([sys.executable, "-m", "fluxprm", "export", str(ckpt), "-o", str(tmp_path / "a_file")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: -o ") and "Traceback" not in done.stderr
