"""Every checkpoint format, loaded through the public loader, against an independent reference.

The tiny checkpoints are laid out exactly like the released ones (see tests/builders.py) and use
the real Qwen2.5 tokenizer; the references in builders.py implement each model card's recipe one
trace at a time without importing fluxprm.
"""

from __future__ import annotations

import json

import pytest

from builders import (build_math_shepherd, build_qwen_prm, build_scalar_head, build_token_classification,
                      ref_math_shepherd, ref_qwen_prm, ref_scalar_head, ref_scalar_head_prefix_rewards,
                      ref_token_classification)
import fluxprm
from fluxprm import Trace, load_prm
from fluxprm.models import detect_format

PROBLEM = "Three pencils and a jumbo eraser cost $1.24. Five pencils and a jumbo eraser cost $1.82. In cents, what is the cost of a pencil?"
THINKING = ["Let p be the price of a pencil and e the eraser.", "Subtracting the equations gives 2p = 0.58, wait, let me recheck.",
            "Yes: 5p + e - (3p + e) = 2p = 1.82 - 1.24 = 0.58."]
RESPONSE = ["So p = 0.29 dollars.", "The cost of a pencil is \\boxed{29} cents."]


def _trace() -> Trace:
    return Trace(id="t", problem=PROBLEM, response="", thinking="x", thinking_steps=list(THINKING), steps=list(RESPONSE))


def _load(folder, **kw):
    return load_prm(str(folder), dtype="float32", device="cpu", **kw)


def test_qwen_prm_matches_model_card():
    folder = build_qwen_prm(None)
    assert detect_format(folder) == "qwen-prm"
    prm = _load(folder)
    [s] = fluxprm.score(prm, [_trace()])
    ref = ref_qwen_prm(folder, PROBLEM, THINKING + RESPONSE)
    assert s.step_rewards == pytest.approx(ref, abs=1e-4)
    assert max(ref) - min(ref) > 0.05, "rewards must vary between steps for the test to mean something"
    assert s.thinking_step_rewards == pytest.approx(ref[:3], abs=1e-4)
    assert s.response_step_rewards == pytest.approx(ref[3:], abs=1e-4)
    assert s.score == pytest.approx(sum(ref) / len(ref), abs=1e-4)
    assert prm.separator_id == prm.tokenizer.convert_tokens_to_ids("<extra_0>") == 151651


def test_qwen_prm_system_prompt_option():
    folder = build_qwen_prm(None)
    system = "Please reason step by step, and put your final answer within \\boxed{}."
    prm = _load(folder, system_prompt=system)
    [s] = fluxprm.score(prm, [{"problem": PROBLEM, "steps": RESPONSE}])
    assert s.step_rewards == pytest.approx(ref_qwen_prm(folder, PROBLEM, RESPONSE, system=system), abs=1e-4)
    # no thinking part: a plain answer's steps are response steps (the part lists always partition step_rewards)
    assert s.thinking_step_rewards == [] and s.response_step_rewards == s.step_rewards


def test_qwen_prm_bfloat16_close_to_float32():
    folder = build_qwen_prm(None)
    [a] = fluxprm.score(_load(folder), [_trace()])
    [b] = fluxprm.score(load_prm(str(folder), dtype="bfloat16", device="cpu"), [_trace()])
    assert b.step_rewards == pytest.approx(a.step_rewards, abs=0.05)


def test_scalar_head_matches_model_card():
    folder = build_scalar_head(None)
    assert detect_format(folder) == "scalar-head"
    prm = _load(folder)
    [s] = fluxprm.score(prm, [_trace()])
    steps = THINKING + RESPONSE
    assert s.score == pytest.approx(ref_scalar_head(folder, PROBLEM, "\n\n".join(steps)), abs=1e-4)
    assert s.step_rewards == pytest.approx(ref_scalar_head_prefix_rewards(folder, PROBLEM, steps), abs=1e-4)
    assert s.step_rewards[-1] == pytest.approx(s.score, abs=1e-6)


def test_math_shepherd_matches_model_card():
    folder = build_math_shepherd(None)
    prm = _load(folder, format="math-shepherd")
    [s] = fluxprm.score(prm, [{"problem": PROBLEM, "steps": RESPONSE + ["Hence 29."]}])
    ref = ref_math_shepherd(folder, PROBLEM, RESPONSE + ["Hence 29."])
    assert s.step_rewards == pytest.approx(ref, abs=1e-4)
    assert s.score == pytest.approx(min(ref), abs=1e-4)


def test_math_shepherd_reads_tagged_records():
    """A real Math-Shepherd record (steps already numbered and tagged) scores one reward per tag."""
    from pathlib import Path

    line = (Path(__file__).parent / "fixtures/traces/math_shepherd_sample.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    prm = _load(build_math_shepherd(None), format="math-shepherd")
    [s] = fluxprm.score(prm, [rec])
    assert len(s.step_rewards) == rec["input"].count("ки")


def test_token_classification_matches_trl_layout():
    folder = build_token_classification(None)
    assert detect_format(folder) == "token-classification"
    prm = _load(folder)
    [s] = fluxprm.score(prm, [{"problem": PROBLEM, "steps": RESPONSE}])
    assert s.step_rewards == pytest.approx(ref_token_classification(folder, PROBLEM, RESPONSE), abs=1e-4)


def test_no_remote_code_is_needed(tmp_path):
    """The qwen-prm folder carries an auto_map to remote code; loading must not need (or run) it."""
    folder = build_qwen_prm(tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" in config and not list(folder.glob("*.py"))
    assert fluxprm.score(_load(folder), [_trace()])


def test_unknown_folder_format_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path)


@pytest.mark.parametrize("spec", ["./nonexistent", "../nonexistent", "/nonexistent/ckpt", "~/nonexistent",
                                  "runs/a/ckpt", "ckpt/"])
def test_missing_local_folder_is_not_reported_as_a_hub_model(spec, monkeypatch):
    """A spec that can only be a path says the folder is missing, not that the hub cache lacks it."""
    from fluxprm.models.resolve import ModelNotFound, resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        resolve_model(spec)
    assert str(info.value) == f"model folder {spec} does not exist"


def test_a_file_given_as_model_folder_is_named(tmp_path):
    from fluxprm.models.resolve import ModelNotFound, resolve_model

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelNotFound, match="is a file, not a model folder"):
        resolve_model(str(weights))


def test_hub_id_whose_org_is_a_local_folder_also_says_the_folder_is_missing(tmp_path, monkeypatch):
    """``runs/ckpt`` is both a hub id and a relative path: with ``runs/`` present locally, both are named."""
    from fluxprm.models.resolve import ModelNotFound, resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelNotFound, match=r"Hugging Face cache.*There is no folder runs/ckpt either\.$"):
        resolve_model("runs/ckpt")


def test_math_shepherd_format_on_a_checkpoint_without_an_lm_head_is_refused():
    """`--format math-shepherd` on a qwen-prm checkpoint read its (untied) input embeddings as an LM head and
    scored every step with numbers that meant nothing (0.0003), silently."""
    with pytest.raises(ValueError, match="no 'lm_head.weight' and untied embeddings: not a causal language model"):
        _load(build_qwen_prm(None), format="math-shepherd")
