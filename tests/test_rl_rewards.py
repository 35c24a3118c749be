"""fluxprm.rl.rewards: the scalar RL reward and dense per-step rewards placed on the policy's tokens.

Placement is checked against an independent reference (``builders.step_end_token_indices`` on the real Qwen2.5
tokenizer's offsets) and by decoding: the token a step's reward sits on is the first whose decoded prefix
contains the whole step.
"""

from __future__ import annotations

import math

import pytest

import fluxprm
from builders import build_qwen25_tokenizer, step_end_token_indices
from fluxprm.records import BadRecord
from fluxprm.rl.rewards import (RewardModel, closing_tokens, completion_record, mix, prm_reward, reward,
                                token_ends)

PROMPTS = ["What is 2+3?", "What is 7*6?", "Compute 1/2 + 1/4.", "Name the capital of France."]
COMPLETIONS = [
    "<think>\nI add 2 and 3.\n\nThat gives 5, since 2+3=5.\n</think>\n\nThe answer is \\boxed{5}.",
    "<think>\n7 times 6 is 42.\n\nCheck with 6·7 = 42 — café, 漢字, émoji 🙂 all fine.\n\nYes.\n</think>\n\n"
    "So \\boxed{41}.",
    "<|begin_of_thought|>\n\nHalf plus a quarter.\n\nThat is 2/4 + 1/4 = 3/4.\n\n<|end_of_thought|>\n\n"
    "<|begin_of_solution|>\n\n1/2 + 1/4 = \\boxed{\\frac{3}{4}}\n\n<|end_of_solution|>",
    "Paris is the capital.\n\nFinal answer: Paris",
]
GOLD = ["5", "42", "3/4", None]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_qwen25_tokenizer(None)))


@pytest.fixture(scope="module")
def rm() -> RewardModel:
    return RewardModel()  # fluxprm-mini, embedded


def _step_texts(rm: RewardModel, prompt: str, completion: str) -> list[str]:
    traces, results = rm.score([prompt], [completion])
    trace, result = traces[0], results[0]
    texts = [trace.thinking[a:b] for a, b in result.thinking_step_spans or []]
    texts += [trace.response[a:b] for a, b in result.response_step_spans or []]
    assert len(texts) == len(result.step_rewards)
    return texts


def _char_ends(completion: str, steps: list[str]) -> list[int]:
    ends, cursor = [], 0
    for step in steps:
        start = completion.index(step, cursor)
        cursor = start + len(step)
        ends.append(cursor)
    return ends


def test_every_step_reward_lands_on_the_token_that_closes_its_step(rm, tokenizer):
    dense = rm.dense(PROMPTS, COMPLETIONS, tokenizer, GOLD)
    for prompt, completion, d in zip(PROMPTS, COMPLETIONS, dense):
        enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        assert len(d.token_rewards) == len(ids)
        steps = _step_texts(rm, prompt, completion)
        assert len(steps) >= 1 and len(d.step_end_tokens) == len(steps)
        char_ends = _char_ends(completion, steps)
        assert d.step_end_tokens == step_end_token_indices(enc["offset_mapping"], char_ends)
        for step, t in zip(steps, d.step_end_tokens):
            assert step in tokenizer.decode(ids[: t + 1])      # the step is complete at its token...
            assert not tokenizer.decode(ids[:t]).endswith(step)  # ...and not one token earlier
            assert step not in tokenizer.decode(ids[:t])[-len(step) - 1:]


def test_dense_rewards_sum_to_the_scalar_and_sit_only_on_step_ends_and_the_last_token(rm, tokenizer):
    scalars = rm.rewards(PROMPTS, COMPLETIONS, GOLD)
    dense = rm.dense(PROMPTS, COMPLETIONS, tokenizer, GOLD)
    for s, d in zip(scalars, dense):
        assert math.isclose(sum(d.token_rewards), s, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(d.reward, s, rel_tol=1e-12)
        nonzero = {i for i, r in enumerate(d.token_rewards) if r != 0.0}
        assert nonzero <= set(d.step_end_tokens) | {len(d.token_rewards) - 1}
        n = len(d.step_rewards)
        for t, r in zip(d.step_end_tokens, d.step_rewards):
            if d.step_end_tokens.count(t) == 1 and t != len(d.token_rewards) - 1:
                assert math.isclose(d.token_rewards[t], 0.75 * r / n / 2, rel_tol=1e-9)  # α = 1 with trajectory


def test_generated_ids_with_special_tokens_keep_one_reward_per_id(rm, tokenizer):
    """verl and TRL hand over the ids the policy generated: an end-of-turn special token is not in the text."""
    completion = COMPLETIONS[0]
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    by_ids = rm.dense(PROMPTS[:1], [completion], tokenizer, GOLD[:1], completion_ids=[ids])[0]
    by_text = rm.dense(PROMPTS[:1], [completion], tokenizer, GOLD[:1])[0]
    assert len(by_ids.token_rewards) == len(ids)
    assert by_ids.step_end_tokens == by_text.step_end_tokens
    assert math.isclose(sum(by_ids.token_rewards), by_text.reward, rel_tol=1e-9)


def test_decoding_fallback_matches_offsets(tokenizer):
    text = COMPLETIONS[1]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    by_offsets = token_ends(text, tokenizer)
    by_decoding = token_ends(text, tokenizer, ids[:-1] + [ids[-1]] + [tokenizer.eos_token_id or 151643])
    # one extra (special) id forces the decoding path; its ends agree wherever a character is complete
    assert by_decoding[: len(ids)][-1] == by_offsets[-1] == len(text)
    assert closing_tokens(by_offsets, [len(text)]) == [len(ids) - 1]
    for c in range(1, len(text) + 1, 7):
        a, b = closing_tokens(by_offsets, [c])[0], closing_tokens(by_decoding, [c])[0]
        assert abs(a - b) <= 1  # a multi-byte character may be attributed to its first byte's token


def test_scalar_reward_is_the_documented_formula(rm):
    prm = rm.prm
    records = [completion_record(p, c, id=str(i)) for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS))]
    offline = fluxprm.score(prm, records)
    got = rm.rewards(PROMPTS, COMPLETIONS, GOLD, beta=0.75)
    for s, g, r in zip(offline, GOLD, got):
        part = s.score / (1 + prm.alpha) if s.trajectory_reward is not None else s.score
        outcome = {"5": 1.0, "42": 0.0, "3/4": 1.0, None: 0.0}[g]
        assert math.isclose(r, 0.25 * outcome + 0.75 * min(1.0, max(0.0, part)), rel_tol=1e-6)
    only_prm = reward(PROMPTS, COMPLETIONS, None, beta=1.0, model=rm)
    assert all(0.0 <= x <= 1.0 for x in only_prm)
    only_outcome = reward(PROMPTS, COMPLETIONS, GOLD, beta=0.0, model=rm)
    assert only_outcome == [1.0, 0.0, 1.0, 0.0]


def test_conversational_samples_as_trl_passes_them(rm):
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}] for p in PROMPTS[:2]]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS[:2]]
    assert rm.rewards(prompts, completions, GOLD[:2]) == pytest.approx(rm.rewards(PROMPTS[:2], COMPLETIONS[:2], GOLD[:2]))


def test_unscorable_completions_get_a_finite_reward_and_never_raise(rm, tokenizer):
    prompts = ["p", "p", "p"]
    completions = ["", "<think>\n\n</think>\n\n", "x" * 40000 + "\n\nThe answer is \\boxed{7}."]
    got = rm.rewards(prompts, completions, ["7", "7", "7"])
    assert got[0] == 0.0 and got[1] == 0.0 and all(math.isfinite(x) for x in got)
    assert got[2] >= 0.25  # right answer: the outcome term survives a clipped trace
    dense = rm.dense(prompts, completions, tokenizer, ["7", "7", "7"])
    assert dense[0].token_rewards == [] and dense[0].error
    assert math.isclose(sum(dense[2].token_rewards), got[2], rel_tol=1e-9)
    assert prm_reward(BadRecord("<rl>", 1, "no steps")) == 0.0
    assert mix(0.5, None, 0.75) == 0.375
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        rm.rewards(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="tokenizer"):
        reward(["a"], ["b"], model=rm, dense=True)
