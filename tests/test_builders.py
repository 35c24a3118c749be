"""The offline real-layout checkpoints and the reference scorers in ``builders.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import builders
from builders import (
    PRM_STEP_TOKEN,
    QWEN25_ADDED_TOKENS,
    QWEN_DEFAULT_SYSTEM,
    QWEN_MATH_DEFAULT_SYSTEM,
    build_math_shepherd,
    build_qwen25_tokenizer,
    build_qwen_prm,
    build_scalar_head,
    build_token_classification,
    math_shepherd_input,
    qwen_prm_messages,
    ref_math_shepherd,
    ref_qwen_prm,
    ref_scalar_head,
    ref_scalar_head_prefix_rewards,
    ref_token_classification,
    shepherd_token_ids,
    trl_prm_input_ids,
)

PROBLEM = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
STEPS = [
    "Natalia sold 48 / 2 = 24 clips in May.",
    "Natalia sold 48 + 24 = 72 clips altogether in April and May.",
    "Wait, check: 72 - 48 = 24, correct.",
    "The answer is $\\boxed{72}$.",
]


def _tok(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _check_rewards(rewards: list[float], n: int) -> None:
    assert len(rewards) == n
    assert all(math.isfinite(r) and 0.0 < r < 1.0 for r in rewards), rewards
    assert max(rewards) - min(rewards) > 0.02, rewards  # not constant across steps


# ------------------------------------------------------------------------------------------------
# fixtures: cached folders (read-only; dst=None returns the shared cache copy)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_tok():
    return _tok(build_qwen25_tokenizer(None, prm=False))


@pytest.fixture(scope="module")
def prm_tok():
    return _tok(build_qwen25_tokenizer(None, prm=True))


@pytest.fixture(scope="module")
def prm_dir():
    return build_qwen_prm(None, seed=0)


@pytest.fixture(scope="module")
def scalar_dir():
    return build_scalar_head(None, seed=0)


@pytest.fixture(scope="module")
def shepherd_dir():
    return build_math_shepherd(None, seed=0)


@pytest.fixture(scope="module")
def tc_dir():
    return build_token_classification(None, seed=0)


# ------------------------------------------------------------------------------------------------
# 1. tokenizer
# ------------------------------------------------------------------------------------------------


def test_qwen25_tokenizer_ids(qwen_tok):
    tok = qwen_tok
    assert tok.encode("<|im_start|>hello<|im_end|>") == [151644, 14990, 151645]
    assert len(tok) == 151665
    for i, (content, _special) in enumerate(QWEN25_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(content) == 151643 + i
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.bos_token is None
    assert tok.convert_tokens_to_ids("<|quad_end|>") == 151651
    # no BOS is added, plain text round-trips
    text = "Let $x^2 + 3x = 10$. Then x = 2 or x = -5.\n\n你好"
    assert tok.decode(tok.encode(text)) == text


def test_qwen25_tokenizer_matches_tiktoken(qwen_tok):
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.Encoding(
        "qwen25",
        pat_str=builders.QWEN_PAT_STR,
        mergeable_ranks=builders.load_qwen_ranks(),
        special_tokens={c: 151643 + i for i, (c, _) in enumerate(QWEN25_ADDED_TOKENS)},
    )
    texts = [
        PROBLEM,
        " ".join(STEPS),
        "don't I'll 1234567890 ... !!!??? \t\t  x\r\n\r\n  \n",
        "Ωmega ≤ ∫ f(x) dx — naïve café 😀 数学题",
        "<|im_start|>user\nhi<|im_end|>\n<tool_call>",
    ]
    for text in texts:
        assert qwen_tok.encode(text) == enc.encode(text, allowed_special="all"), text


def test_prm_tokenizer_extra_0(prm_tok):
    tok = prm_tok
    assert tok.convert_tokens_to_ids(PRM_STEP_TOKEN) == 151651
    assert tok.encode("a<extra_0>b") == [64, 151651, 65]
    assert tok.encode(PRM_STEP_TOKEN) == [151651]
    assert tok.encode("<|im_start|>hello<|im_end|>") == [151644, 14990, 151645]
    assert "<|quad_end|>" not in tok.get_vocab()
    assert len(tok) == 151665


def test_chat_templates(qwen_tok, prm_tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    out = qwen_tok.apply_chat_template(msgs, tokenize=False)
    assert out == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    )
    with_sys = qwen_tok.apply_chat_template([{"role": "system", "content": "S"}] + msgs[:1], tokenize=False, add_generation_prompt=True)
    assert with_sys == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # the PRM checkpoints carry the Qwen2.5-Math-Instruct template (different default system prompt)
    prm_out = prm_tok.apply_chat_template(msgs, tokenize=False)
    assert prm_out.startswith(f"<|im_start|>system\n{QWEN_MATH_DEFAULT_SYSTEM}<|im_end|>\n")
    assert "\\boxed{}" in prm_out
    # tools branch renders too
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert "# Tools" in qwen_tok.apply_chat_template(msgs[:1], tools=tools, tokenize=False)


# ------------------------------------------------------------------------------------------------
# 2. checkpoints + 3. references
# ------------------------------------------------------------------------------------------------


def test_qwen_prm_layout(prm_dir):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    cfg = json.loads((prm_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForProcessRewardModel"]
    assert cfg["model_type"] == "qwen2" and cfg["num_labels"] == 2 and cfg["tie_word_embeddings"] is False
    assert cfg["auto_map"] == {
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
    }
    assert cfg["vocab_size"] > 151664
    assert not list(prm_dir.glob("*.py"))
    with safe_open(str(prm_dir / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.get_tensor("score.2.weight").shape == (2, cfg["hidden_size"])
    head = {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"}
    assert head <= names
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.down_proj.weight"} <= names
    assert all(n in head or n.startswith("model.") for n in names)  # no lm_head
    # loads with plain transformers, no remote code
    assert type(AutoConfig.from_pretrained(str(prm_dir))).__name__ == "Qwen2Config"
    model, info = AutoModel.from_pretrained(str(prm_dir), output_loading_info=True)
    assert type(model).__name__ == "Qwen2Model"
    assert not info["missing_keys"]
    assert _tok(prm_dir).convert_tokens_to_ids(PRM_STEP_TOKEN) == 151651


def test_ref_qwen_prm(prm_dir):
    from safetensors.torch import load_file
    from transformers import AutoModel

    rewards = ref_qwen_prm(prm_dir, PROBLEM, STEPS)
    _check_rewards(rewards, len(STEPS))
    with_sys = ref_qwen_prm(prm_dir, PROBLEM, STEPS, system=QWEN_MATH_DEFAULT_SYSTEM)
    assert with_sys == pytest.approx(rewards, abs=1e-6)  # default system == the card's system
    other = ref_qwen_prm(prm_dir, PROBLEM, STEPS, system="You are a grader.")
    assert other != pytest.approx(rewards, abs=1e-4)
    # cross-check the hand-built model against transformers' own loader + the score head
    tok = _tok(prm_dir)
    text = tok.apply_chat_template(qwen_prm_messages(PROBLEM, STEPS), tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok.encode(text)])
    assert int((ids == 151651).sum()) == len(STEPS)
    backbone = AutoModel.from_pretrained(str(prm_dir), dtype=torch.float32).eval()
    w = load_file(str(prm_dir / "model.safetensors"))
    with torch.no_grad():
        h = backbone(input_ids=ids).last_hidden_state[0]
        z = torch.relu(h @ w["score.0.weight"].T + w["score.0.bias"]) @ w["score.2.weight"].T + w["score.2.bias"]
        probs = torch.softmax(z, -1)[ids[0] == 151651, 1]
    assert probs.tolist() == pytest.approx(rewards, abs=1e-5)


def test_scalar_head_layout_and_ref(scalar_dir):
    from transformers import AutoModelForCausalLM

    state = torch.load(scalar_dir / "reward_head.pt", map_location="cpu", weights_only=True)
    cfg = json.loads((scalar_dir / "config.json").read_text())
    assert set(state) == {"weight", "bias"} and tuple(state["weight"].shape) == (1, cfg["hidden_size"])
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    model, info = AutoModelForCausalLM.from_pretrained(str(scalar_dir), output_loading_info=True)
    assert not info["missing_keys"]
    completion = "\n\n".join(STEPS)
    r = ref_scalar_head(scalar_dir, PROBLEM, completion)
    assert math.isfinite(r) and 0.0 < r < 1.0
    assert r != pytest.approx(ref_scalar_head(scalar_dir, PROBLEM, "\n\n".join(STEPS[:2])), abs=1e-3)
    prefix = ref_scalar_head_prefix_rewards(scalar_dir, PROBLEM, STEPS)
    _check_rewards(prefix, len(STEPS))
    assert prefix[-1] == pytest.approx(r, abs=1e-5)
    # where a step's end is a clean token boundary, the one-pass prefix reward equals scoring the
    # prefix on its own (causal attention)
    clean = ["In May she sold 24 clips", "In total she sold 72 clips", "The answer is 72"]
    one_pass = ref_scalar_head_prefix_rewards(scalar_dir, PROBLEM, clean)
    separate = [ref_scalar_head(scalar_dir, PROBLEM, "\n\n".join(clean[: k + 1])) for k in range(len(clean))]
    assert one_pass == pytest.approx(separate, abs=1e-5)


def test_math_shepherd_layout_and_ref(shepherd_dir):
    from transformers import AutoModelForCausalLM

    cfg = json.loads((shepherd_dir / "config.json").read_text())
    assert cfg["architectures"] == ["MistralForCausalLM"] and cfg["model_type"] == "mistral"
    model, info = AutoModelForCausalLM.from_pretrained(str(shepherd_dir), output_loading_info=True)
    assert not info["missing_keys"]
    tok = _tok(shepherd_dir)
    candidates, tag = shepherd_token_ids(tok)  # the card's own recipe, verbatim
    assert candidates == [tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("Ġ-")] == [10, 481]
    assert tag == tok.convert_tokens_to_ids("ки") == 151665
    assert tok.encode(" ки")[-1] == tag and tok.encode("ки", add_special_tokens=False) == [tag]
    assert tok.encode("x")[0] == tok.bos_token_id  # BOS prepended like Mistral
    text = math_shepherd_input("Q?", ["a", "b"])
    assert text == "Q? Step 1: a ки\nStep 2: b ки"
    ids = tok.encode(math_shepherd_input(PROBLEM, STEPS))
    assert ids.count(tag) == len(STEPS)
    _check_rewards(ref_math_shepherd(shepherd_dir, PROBLEM, STEPS), len(STEPS))


def test_token_classification_layout_and_ref(tc_dir, qwen_tok):
    from transformers import AutoModelForTokenClassification

    cfg = json.loads((tc_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForTokenClassification"]
    model, info = AutoModelForTokenClassification.from_pretrained(str(tc_dir), output_loading_info=True)
    assert not info["missing_keys"] and model.config.num_labels == 2
    # TRL PRMTrainer.tokenize_row docstring example (Qwen/Qwen2.5-0.5B tokenizer), reproduced exactly
    ids, positions = trl_prm_input_ids(
        qwen_tok, "Which number is larger, 9.8 or 9.11?", ["11 is greater than 8.", "Hence, 9.11 > 9.8."], "\n"
    )
    assert ids == [23085, 1372, 374, 8131, 11, 220, 24, 13, 23, 476, 220, 24, 13, 16, 16, 30, 16, 16, 374, 7046,
                   1091, 220, 23, 13, 198, 39, 763, 11, 220, 24, 13, 16, 16, 861, 220, 24, 13, 23, 13, 198]
    assert positions == [24, 39]
    _check_rewards(ref_token_classification(tc_dir, PROBLEM, STEPS), len(STEPS))
    alt = ref_token_classification(tc_dir, PROBLEM, STEPS, separator="\n\n")
    assert alt != pytest.approx(ref_token_classification(tc_dir, PROBLEM, STEPS), abs=1e-4)


# ------------------------------------------------------------------------------------------------
# caching
# ------------------------------------------------------------------------------------------------


def test_cache_is_reused_and_dst_is_a_private_copy(prm_dir, tmp_path):
    counts = dict(builders.BUILD_COUNTS)
    again = build_qwen_prm(None, seed=0)
    assert again == prm_dir
    assert builders.BUILD_COUNTS == counts  # nothing rebuilt
    dst = build_qwen_prm(tmp_path / "prm", seed=0)
    assert dst == tmp_path / "prm"
    assert (dst / "model.safetensors").read_bytes() == (prm_dir / "model.safetensors").read_bytes()
    assert not (dst / ".complete").exists()
    (dst / "config.json").write_text("{}")  # tests may mutate their copy ...
    assert json.loads((prm_dir / "config.json").read_text())["num_labels"] == 2  # ... not the cache
    assert builders.BUILD_COUNTS == counts


def test_cache_builds_once_in_a_fresh_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXPRM_TEST_CACHE", str(tmp_path / "cache"))
    name = "qwen25-tokenizer"
    before = builders.BUILD_COUNTS.get(name, 0)
    first = build_qwen25_tokenizer(tmp_path / "a", prm=False)
    assert builders.BUILD_COUNTS[name] == before + 1
    cached = tmp_path / "cache" / builders.CACHE_VERSION / name
    assert (cached / ".complete").exists() and (cached / "tokenizer.json").exists()
    second = build_qwen25_tokenizer(tmp_path / "b", prm=False)
    assert builders.BUILD_COUNTS[name] == before + 1  # copied from the cache, not built again
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
