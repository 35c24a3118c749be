"""fluxprm rewards inside TRL: ``GRPOReward`` called by a real ``trl.GRPOTrainer`` and with TRL's keywords.

The trainer test runs two GRPO steps on CPU with a tiny random Qwen2 policy (real Qwen2.5 tokenizer) and the
embedded fluxprm-mini PRM, then checks three records against each other: what ``GRPOReward`` returned (its
``history``), what TRL logged (``log_history`` means and stds, and the per-completion rewards in TRL's own
completions parquet files), and an independent ``RewardModel().rewards(...)`` on the completions TRL decoded.

A random policy never writes a final answer, so generation is nudged with ``sequence_bias`` (a real
``GenerationConfig`` option TRL passes through): " \\" is made likely, and once sampled it is followed by
``boxed{4}`` and the end of turn. Some completions then answer 4 and most prompts' gold is not 4, so the
outcome term takes both values and a gold column that did not reach the reward would be caught.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import datasets  # dev dependencies: a missing one fails the suite, it does not skip it
import pandas as pd
import pytest
import torch
import trl
from builders import build_qwen25_tokenizer

from fluxprm.rl import GRPOReward, RewardModel
from fluxprm.rl.rewards import shared_model

BETA = 0.75
MAX_STEPS = 2
NUM_GENERATIONS = 4
BATCH = 8  # two prompts × four generations per step
GOLD = {"What is 2 + 2?": "4", "What is 2 + 3?": "5", "What is 3 + 4?": "7", "Name any even number.": None}


def _sample_std(values: list[float]) -> float:
    """TRL's ``nanstd``: the Bessel-corrected standard deviation."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _bias(tokenizer) -> list[list]:
    """``sequence_bias`` (JSON-safe list form) that makes " \\boxed{4}<|im_end|>" likely, and steps ("\\n\\n")."""
    slash, boxed, opening, four, closing = tokenizer(" \\boxed{4}", add_special_tokens=False)["input_ids"]
    chain = [slash, boxed, opening, four, closing, tokenizer.eos_token_id]
    forced = [[chain[: i + 1], 40.0] for i in range(1, len(chain))]
    newlines = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return [[[slash], 8.5], [newlines, 9.5], *forced]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """Two real GRPO steps; returns the trainer, the two rewards and the output folder."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("grpo")
    tokenizer = AutoTokenizer.from_pretrained(build_qwen25_tokenizer(root / "tokenizer"))
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    dataset = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in GOLD.items()])
    mixed = GRPOReward(beta=BETA, gold_column="answer", history=MAX_STEPS)
    outcome_only = GRPOReward(beta=0.0, gold_column="answer", name="fluxprm_outcome", history=MAX_STEPS)
    args = trl.GRPOConfig(
        output_dir=str(root / "out"), use_cpu=True, report_to=[], max_steps=MAX_STEPS, logging_steps=1,
        per_device_train_batch_size=BATCH, num_generations=NUM_GENERATIONS, max_completion_length=32,
        generation_kwargs={"sequence_bias": _bias(tokenizer)}, log_completions=True, num_completions_to_print=1,
        save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=7)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[mixed, outcome_only], args=args,
                              train_dataset=dataset, processing_class=tokenizer)
    try:
        trainer.train()
    finally:
        # TRL's Trainer leaves accelerate's process-wide state set (use_cpu, its mixed precision); a later
        # Accelerator in this process (fluxprm train's LoRA loop, in the next test files) may not change it
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    return trainer, mixed, outcome_only, Path(args.output_dir)


def _step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "rewards/fluxprm/mean" in entry]


def test_trl_logged_the_rewards_fluxprm_returned(grpo_run):
    trainer, mixed, outcome_only, _ = grpo_run
    assert trainer.reward_func_names == ["fluxprm", "fluxprm_outcome"]
    logs = _step_logs(trainer)
    assert len(logs) == MAX_STEPS == len(mixed.history) == len(outcome_only.history)
    for log, batch, obatch in zip(logs, mixed.history, outcome_only.history):
        assert len(batch.rewards) == BATCH
        assert log["rewards/fluxprm/mean"] == pytest.approx(sum(batch.rewards) / BATCH, abs=1e-6)
        assert log["rewards/fluxprm/std"] == pytest.approx(_sample_std(batch.rewards), abs=1e-6)
        assert log["rewards/fluxprm_outcome/mean"] == pytest.approx(sum(obatch.rewards) / BATCH, abs=1e-6)
        # TRL's total reward is the (unit-weighted) sum of the two functions' rewards
        total = [a + b for a, b in zip(batch.rewards, obatch.rewards)]
        assert log["reward"] == pytest.approx(sum(total) / BATCH, abs=1e-6)
        # the extra metrics fluxprm logged through TRL's log_metric
        assert log["fluxprm/prm"] == pytest.approx(sum(batch.prm) / BATCH, abs=1e-6)
        graded = [o for o in batch.outcome if o is not None]
        assert log["fluxprm/outcome"] == pytest.approx(sum(graded) / len(graded), abs=1e-6)
        assert log["fluxprm/unscored"] == pytest.approx(sum(batch.unscored) / BATCH, abs=1e-6)
        assert "fluxprm_outcome/prm" not in log  # β = 0: the PRM part is not computed, so not logged
        # both rewards saw the same batch, and agree on the outcome
        assert obatch.completions == batch.completions
        assert obatch.outcome == batch.outcome
        assert obatch.rewards == [o or 0.0 for o in batch.outcome]
        for r, p, o in zip(batch.rewards, batch.prm, batch.outcome):
            assert r == pytest.approx((1 - BETA) * (o or 0.0) + BETA * p, abs=1e-12)


def test_trl_completions_table_matches_fluxprm_and_an_independent_recomputation(grpo_run):
    trainer, mixed, _, out = grpo_run
    tables = sorted((out / "completions").glob("completions_*.parquet"))
    assert len(tables) == MAX_STEPS
    prompts, completions, logged = [], [], []
    for table, batch in zip(tables, mixed.history):
        frame = pd.read_parquet(table)
        step_prompts = [[dict(m) for m in p] for p in frame["prompt"]]
        step_completions = [[dict(m) for m in c] for c in frame["completion"]]
        assert step_completions == batch.completions  # what TRL decoded is what fluxprm scored
        assert frame["fluxprm"].tolist() == pytest.approx(batch.rewards, abs=1e-6)
        assert frame["fluxprm/prm"].tolist() == pytest.approx(batch.prm, abs=1e-6)
        prompts += step_prompts
        completions += step_completions
        logged += frame["fluxprm"].tolist()
    gold = [GOLD[p[-1]["content"]] for p in prompts]
    # the bias did its job: some completions answer 4, and the gold answers make the outcome both 1 and 0
    outcomes = [o for b in mixed.history for o in b.outcome]
    assert 1.0 in outcomes and 0.0 in outcomes and None in outcomes
    independent = RewardModel().rewards(prompts, completions, gold, beta=BETA)
    assert logged == pytest.approx(independent, abs=1e-4)


# ----------------------------------------------------------------------------------------- direct calls

def test_conversational_keywords_and_a_bad_completion_give_finite_rewards():
    reward = GRPOReward(history=1)
    metrics: dict[str, list[float]] = {}
    extra: dict[str, list] = {}
    prompts = [[{"role": "system", "content": "Reason step by step."},
                {"role": "user", "content": "What is 2 + 2?"}]] * 4
    completions = [[{"role": "assistant", "content": "Two plus two is four.\n\nSo the answer is \\boxed{4}."}],
                   [{"role": "assistant", "content": ""}],
                   [{"role": "assistant", "content": "\\boxed{5}"}],
                   [{"role": "assistant", "content": "\n\n\n\n"}]]
    out = reward(prompts=prompts, completions=completions, completion_ids=[[1], [], [2], [3]],
                 answer=["4", "4", None, ""], other_column=[1, 2, 3, 4], trainer_state=None,
                 log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
                 log_extra=lambda column, values: extra.setdefault(column, []).extend(values))
    assert len(out) == 4 and all(isinstance(r, float) and math.isfinite(r) for r in out)
    batch = reward.history[-1]
    assert batch.outcome == [1.0, 0.0, None, None]  # None and "" gold: no outcome
    assert batch.unscored[1] and batch.unscored[3] and batch.prm[1] == 0.0 and batch.prm[3] == 0.0
    assert not batch.unscored[0] and 0.0 < batch.prm[0] <= 1.0
    assert out[0] == pytest.approx(0.25 + 0.75 * batch.prm[0]) and out[1] == 0.0
    assert metrics["fluxprm/outcome"] == [0.5]  # over the two completions that had a gold answer
    assert metrics["fluxprm/prm"] == [pytest.approx(sum(batch.prm) / 4)]
    assert metrics["fluxprm/unscored"] == [0.5]
    assert extra == {"fluxprm/prm": batch.prm, "fluxprm/outcome": batch.outcome}
    # the same pairs through the plain-string path and RewardModel give the same rewards
    texts = [c[0]["content"] for c in completions]
    assert out == pytest.approx(shared_model().rewards(["What is 2 + 2?"] * 4, texts, ["4", "4", None, ""], BETA))


def test_missing_gold_column_warns_once_and_scores_the_prm_part(caplog):
    reward = GRPOReward(gold_column="solution")
    with caplog.at_level(logging.WARNING, logger="fluxprm.rl.trl"):
        first = reward(prompts=["What is 2 + 2?"], completions=["It is 4.\n\n\\boxed{4}"], answer=["4"])
        second = reward(prompts=["What is 2 + 2?"], completions=["It is 4.\n\n\\boxed{4}"], answer=["4"])
    warnings = [r for r in caplog.records if "no 'solution' column" in r.getMessage()]
    assert len(warnings) == 1 and "answer" in warnings[0].getMessage()
    batch = reward.history[-1]
    assert batch.outcome == [None] and first == second == [pytest.approx(BETA * batch.prm[0])] and batch.prm[0] > 0
    silent = GRPOReward(gold_column=None)
    with caplog.at_level(logging.WARNING, logger="fluxprm.rl.trl"):
        caplog.clear()
        silent(prompts=["q"], completions=["\\boxed{4}"], answer=["4"])
    assert not caplog.records and silent.history[-1].outcome == [None]


def test_long_completion_and_weight_zero_parts():
    huge = "Let me think. " * 2000 + "\n\n" + "x" * 20000 + "\n\nSo \\boxed{4}."
    out = GRPOReward()(prompts=["What is 2 + 2?"], completions=[huge], answer=["4"])
    assert len(out) == 1 and 0.25 <= out[0] <= 1.0
    prm_only = GRPOReward(beta=1.0, name="prm_only")
    assert prm_only(prompts=["q"], completions=["\\boxed{4}"], answer=["4"]) == [prm_only.history[-1].prm[0]]
    assert prm_only.history[-1].outcome == [None]  # β = 1: not graded
    outcome_only = GRPOReward(model="no-such-model-anywhere", beta=0.0)  # β = 0: the PRM is never loaded
    assert outcome_only(prompts=["q", "q"], completions=["\\boxed{4}", "\\boxed{3}"], answer=["4", "4"]) == [1.0, 0.0]


def test_two_rewards_weighted_like_beta_sum_to_the_mixed_reward():
    """docs/rl.md's split recipe: reward_weights [β, 1 − β] on PRM-only and outcome-only rewards = the mix."""
    prompts = ["What is 2 + 2?"] * 3
    completions = ["Two and two.\n\nThat is four, \\boxed{4}.", "It is \\boxed{5}.", "Hmm.\n\nNo idea."]
    gold = ["4", "4", "4"]
    mixed = GRPOReward(beta=BETA)(prompts=prompts, completions=completions, answer=gold)
    prm = GRPOReward(beta=1.0, name="fluxprm_prm")(prompts=prompts, completions=completions, answer=gold)
    outcome = GRPOReward(beta=0.0, name="fluxprm_outcome")(prompts=prompts, completions=completions, answer=gold)
    assert outcome == [1.0, 0.0, 0.0]
    assert mixed == pytest.approx([BETA * p + (1 - BETA) * o for p, o in zip(prm, outcome)], abs=1e-12)


def test_name_signature_pickling_and_bad_arguments():
    from trl.trainer.utils import get_callable_name, is_async_callable

    reward = GRPOReward(name="prm_mix")
    assert get_callable_name(reward) == "prm_mix" and not is_async_callable(reward)
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "prm_mix" and copy.beta == BETA and copy._loaded is None
    loaded = GRPOReward(model=shared_model())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(loaded)
    for bad in ({"beta": 1.5}, {"beta": -0.1}, {"name": ""}, {"history": -1}):
        with pytest.raises(ValueError):
            GRPOReward(**bad)
    with pytest.raises(ValueError, match="entries for"):
        GRPOReward(beta=0.0)(prompts=["q", "q"], completions=["a", "b"], answer=["4"])
