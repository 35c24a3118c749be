"""fluxprm.rl.verl inside verl 0.9.1: verl's own config, loaders, registries, DataProto and Reward Loop.

Batches are built the way verl's agent loop builds them (``AgentLoopWorker._agent_loop_postprocess``): the prompt
is the dataset's chat messages through the chat template, left-padded to ``prompt_length`` with the tokenizer's
``pad``; the response ids (EOS included when the policy stopped) right-padded to ``response_length``;
``attention_mask`` over both, ``position_ids`` from verl's ``compute_position_id_with_mask``; the non-tensor part
is what verl's example preprocessors write (``data_source``, ``reward_model.ground_truth``, ``extra_info`` with
``question``) plus ``raw_prompt``. The config is verl's ``trainer/config/ppo_trainer.yaml`` through hydra.

Dense placement is checked against an independent reference: the step texts of the construction, their
character ends, ``builders.step_end_token_indices`` on the tokenizer's offsets, the step rewards read from a
separate ``RewardModel.score`` call, and decoding the ids up to each reward's token.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import verl  # noqa: F401  - a dev dependency: missing verl fails, it does not skip

import torch  # noqa: E402
from builders import build_qwen25_tokenizer, step_end_token_indices  # noqa: E402

import fluxprm.rl.verl as fv  # noqa: E402
from fluxprm.rl.rewards import DEFAULT_BETA, shared_model  # noqa: E402

VERL_FILE = str(Path(fv.__file__).resolve())
PROMPT_LENGTH = 96
QUESTION_SUFFIX = ' Let\'s think step by step and output the final answer after "####".'

# (question, steps of the response, gold, policy stopped with EOS, answer correct by construction)
SAMPLES = [
    ("What is (3 + 4) * 2?",
     ["First I add the numbers inside the brackets: 3 + 4 = 7.",
      "Then I multiply the sum by two, which gives 7 * 2 = 14.",
      "So the final answer is \\boxed{14}."],
     "14", True, True),
    ("A shop sells pens at 3 dollars each. How much do 5 pens cost?",
     ["Each pen costs 3 dollars and we buy five of them.",
      "Multiplying gives 5 × 3 = 16 dollars in total — naïvely checked.",
      "Therefore the answer is \\boxed{16}."],
     "15", True, False),
    ("What is the square root of 81, plus 1?",
     ["The square root of 81 is 9, since 9 × 9 = 81 (√81 = 9).",
      "Adding one to nine gives 9 + 1 = 10 as the result here.",
      "Double-checking: 10 − 1 = 9 and 9² = 81, consistent.",
      "Hence the final answer is \\boxed{10}."],
     "10", True, True),
    ("Count the primes below 20.",
     ["The primes below twenty are 2, 3, 5, 7, 11, 13, 17 and 19.",
      "Counting them one by one: two, three, five, seven, eleven,",
      "thirteen, seventeen, nineteen: that makes eight primes in the list.",
      "Before answering I check the composite numbers: 4, 6, 8, 9, 10, 12, 14, 15, 16 and 18.",
      "None of those composites is prime, so the list is complete and the count is"],
     "8", False, False),  # cut off at response_length: no EOS, no final answer
]


# ----------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    return str(build_qwen25_tokenizer(None))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def rm():
    return shared_model(None)  # fluxprm-mini, the same process-wide instance verl's managers get


def verl_config(tokenizer_dir: str, *overrides: str):
    """verl's own ppo_trainer.yaml composed by hydra, then migrated as verl's reward loop expects."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.experimental.reward_loop import migrate_legacy_reward_impl

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=[f"actor_rollout_ref.model.path={tokenizer_dir}",
                                                f"actor_rollout_ref.rollout.prompt_length={PROMPT_LENGTH}",
                                                "reward.num_workers=1", *overrides])
    return migrate_legacy_reward_impl(cfg)


def _pad(tokenizer, ids: list[int], length: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's ``AgentLoopWorker._pad_token_ids``: the tokenizer's own pad to ``max_length``."""
    tokenizer.padding_side = side
    out = tokenizer.pad({"input_ids": ids}, padding="max_length", max_length=length, return_tensors="pt",
                        return_attention_mask=True)
    return out["input_ids"].reshape(1, -1), out["attention_mask"].reshape(1, -1)


@pytest.fixture(scope="module")
def batch(tokenizer):
    """(DataProto, per-sample response ids, response texts) built as verl's agent loop builds a batch."""
    from verl import DataProto
    from verl.utils.model import compute_position_id_with_mask

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    responses = ["\n\n".join(steps) for _, steps, *_ in SAMPLES]
    response_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if stops else [])
                    for text, (_, _, _, stops, _) in zip(responses, SAMPLES)]
    response_length = max(len(ids) for ids in response_ids)
    assert len(response_ids[-1]) == response_length, "the cut-off sample must fill response_length exactly"
    rows = {"prompts": [], "responses": [], "p_mask": [], "r_mask": []}
    raw_prompts = []
    for (question, *_), ids in zip(SAMPLES, response_ids):
        messages = [{"role": "user", "content": question + QUESTION_SUFFIX}]
        raw_prompts.append(messages)
        prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        p, pm = _pad(tokenizer, prompt_ids, PROMPT_LENGTH, "left")
        r, rmask = _pad(tokenizer, ids, response_length, "right")
        rows["prompts"].append(p), rows["p_mask"].append(pm), rows["responses"].append(r), rows["r_mask"].append(rmask)
    prompts, responses_t = torch.cat(rows["prompts"]), torch.cat(rows["responses"])
    attention_mask = torch.cat([torch.cat(rows["p_mask"]), torch.cat(rows["r_mask"])], dim=1)
    tensors = {"prompts": prompts, "responses": responses_t, "input_ids": torch.cat([prompts, responses_t], dim=1),
               "attention_mask": attention_mask, "position_ids": compute_position_id_with_mask(attention_mask),
               "response_mask": torch.cat(rows["r_mask"])}
    raw = np.empty(len(SAMPLES), dtype=object)
    raw[:] = raw_prompts
    non_tensors = {
        "data_source": np.array(["openai/gsm8k"] * len(SAMPLES), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": gold} for _, _, gold, *_ in SAMPLES], dtype=object),
        "extra_info": np.array([{"split": "train", "index": i, "question": q} for i, (q, *_) in enumerate(SAMPLES)],
                               dtype=object),
        "raw_prompt": raw,
        "uid": np.array([f"uid-{i}" for i in range(len(SAMPLES))], dtype=object),
    }
    data = DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)
    return data, response_ids, responses


def _run_rows(manager, data) -> list[dict]:
    """What verl's ``RewardLoopWorker.compute_score_batch`` does: one task per row, gathered, on the event loop
    the manager was built with (verl's managers keep ``get_event_loop()`` for their executor calls)."""
    async def gather():
        return await asyncio.gather(*[asyncio.create_task(manager.run_single(data[i:i + 1]))
                                      for i in range(len(data))])
    return manager.loop.run_until_complete(gather())


def _expected_row(rm, tokenizer, index: int, response_ids: list[int], width: int, beta: float = DEFAULT_BETA):
    """The dense row from the construction: step ends by the offsets reference, values from a separate score."""
    question, steps, gold, stops, correct = SAMPLES[index]
    text = "\n\n".join(steps)
    traces, results = rm.score([question], [text])
    result = results[0]
    spans = [traces[0].response[a:b] for a, b in result.response_step_spans]
    assert spans == steps, "fluxprm's segmentation must be the construction's steps"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    char_ends = np.cumsum([len(s) + 2 for s in steps]) - 2
    positions = step_end_token_indices(enc["offset_mapping"], [int(c) for c in char_ends])
    alpha = rm.alpha if rm.alpha is not None else 1.0
    scale = 1.0 + alpha if result.trajectory_reward is not None else 1.0
    n = len(result.step_rewards)
    row = torch.zeros(width, dtype=torch.float64)
    for pos, r in zip(positions, result.step_rewards):
        row[pos] += beta * r / (n * scale)
    tail = (1 - beta) * (1.0 if correct else 0.0)
    if result.trajectory_reward is not None:
        tail += beta * (scale - 1.0) * result.trajectory_reward / scale
    row[len(response_ids) - 1] += tail
    return row, positions


# ----------------------------------------------------------------------------------------- (1) compute_score

def test_compute_score_through_verl_custom_reward_function_and_naive_manager(tokenizer_dir, tokenizer, batch, rm):
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager

    data, response_ids, responses = batch
    questions = [q for q, *_ in SAMPLES]
    golds = [g for _, _, g, *_ in SAMPLES]
    expected = rm.rewards(questions, responses, golds)  # the scalar path of fluxprm.rl.rewards
    for path in (VERL_FILE, "pkg://fluxprm.rl.verl"):  # a file path (verl execs it anew) and a package path
        cfg = verl_config(tokenizer_dir, f"reward.custom_reward_function.path={path}",
                          "reward.custom_reward_function.name=compute_score")
        fn = get_custom_reward_fn(cfg)
        assert fn.args[0] is fv.compute_score  # the package's function, even when verl execs the file itself
        manager = load_reward_manager(cfg, tokenizer)
        assert isinstance(manager, NaiveRewardManager)
        outputs = _run_rows(manager, data)
        for out, want, (*_, correct) in zip(outputs, expected, SAMPLES):
            assert out["reward_score"] == pytest.approx(want, abs=1e-6)
            info = out["reward_extra_info"]
            assert {"score", "prm", "acc"} <= set(info) and info["score"] == out["reward_score"]
            assert info["acc"] == (1.0 if correct else 0.0)
            assert info["score"] == pytest.approx((1 - DEFAULT_BETA) * info["acc"] + DEFAULT_BETA * info["prm"])
            assert 0.0 < info["prm"] <= 1.0


def test_compute_score_keywords_from_reward_kwargs_and_no_gold(tokenizer_dir, tokenizer, batch):
    from verl.trainer.ppo.reward import load_reward_manager

    data, *_ = batch
    cfg = verl_config(tokenizer_dir, "reward.custom_reward_function.path=pkg://fluxprm.rl.verl",
                      "+reward.custom_reward_function.reward_kwargs.beta=1.0")
    outputs = _run_rows(load_reward_manager(cfg, tokenizer), data)
    for out in outputs:  # β = 1: the reward is the PRM part alone, not graded
        assert out["reward_score"] == pytest.approx(out["reward_extra_info"]["prm"])
        assert out["reward_extra_info"]["acc"] == 0.0
    no_gold = fv.compute_score("openai/gsm8k", "\n\n".join(SAMPLES[0][1]), None, {"question": SAMPLES[0][0]})
    assert set(no_gold) == {"score", "prm", "acc"} and no_gold["acc"] == 0.0
    assert no_gold["score"] == pytest.approx(DEFAULT_BETA * no_gold["prm"])


# ----------------------------------------------------------------------------------------- (1b) async over HTTP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fluxprm_serve():
    """A real ``fluxprm serve`` on 127.0.0.1 (fluxprm-mini), stopped after the module."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()
            raise RuntimeError(f"fluxprm serve exited: {err[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("fluxprm serve did not answer within 60 s")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_compute_score_async_through_verl_against_fluxprm_serve(tokenizer_dir, tokenizer, batch, rm, fluxprm_serve):
    from verl.trainer.ppo.reward import load_reward_manager

    data, _, responses = batch
    cfg = verl_config(tokenizer_dir, "reward.custom_reward_function.path=pkg://fluxprm.rl.verl",
                      "reward.custom_reward_function.name=compute_score_async",
                      f"+reward.custom_reward_function.reward_kwargs.url={fluxprm_serve}")
    manager = load_reward_manager(cfg, tokenizer)
    assert manager.is_async_reward_score  # verl awaits it instead of running it in a thread
    outputs = _run_rows(manager, data)
    expected = rm.rewards([q for q, *_ in SAMPLES], responses, [g for _, _, g, *_ in SAMPLES])
    for out, want in zip(outputs, expected):
        assert out["reward_score"] == pytest.approx(want, abs=1e-4)
        assert set(out["reward_extra_info"]) >= {"score", "prm", "acc"}


def test_compute_score_async_scores_odd_samples_as_compute_score_does(fluxprm_serve, caplog, monkeypatch):
    """A lone surrogate in a sample raised a raw UnicodeEncodeError (httpx's json=), and a None solution a TypeError;
    compute_score gives both a PRM part of 0. A missing problem made every PRM part 0 without a word."""
    for solution, acc in (("Two \ud800 plus two is four, so the answer is \\boxed{4}.", 1.0), (None, 0.0)):
        out = asyncio.run(fv.compute_score_async("gsm8k", solution, "4", {"question": "What is 2+2?"},
                                                 url=fluxprm_serve))
        assert out["prm"] == 0.0 and out["acc"] == acc, (solution, out)
    monkeypatch.setattr(fv, "_warned_no_problem", False)
    with caplog.at_level("WARNING", logger="fluxprm.rl.verl"):
        for _ in range(2):
            asyncio.run(fv.compute_score_async("gsm8k", "The answer is \\boxed{4}.", "4", {}, url=fluxprm_serve))
    [warning] = [r.getMessage() for r in caplog.records if "holds no problem text" in r.getMessage()]
    assert "PRM part of every sample is 0" in warning


class _ScriptedServer:
    """A 127.0.0.1 HTTP server answering /get_reward from a script of (status, headers, body): the protocol edges
    (a full queue, a refused key) that a real ``fluxprm serve`` does not produce on demand."""

    def __init__(self, script: list[tuple[int, dict, dict]]):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                status, headers, payload = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(raw))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_compute_score_async_retries_503_honouring_retry_after_and_explains_failures(monkeypatch):
    ok = {"rewards": [0.625], "scores": [0.625], "extra_logs": {"prm_reward": [0.5], "outcome_reward": [1.0]}}
    with _ScriptedServer([(503, {"Retry-After": "0"}, {"detail": "busy"}), (200, {}, ok)]) as srv:
        monkeypatch.setenv("FLUXPRM_SERVE_URL", srv.url)
        monkeypatch.setenv("FLUXPRM_API_KEY", "k-123")
        out = asyncio.run(fv.compute_score_async("src", "Step one is long enough here.", "7", {"question": "Q?"}))
        assert out == {"score": 0.625, "prm": 0.5, "acc": 1.0}
        assert len(srv.requests) == 2
        path, headers, body = srv.requests[0]
        assert path == "/get_reward" and headers["Authorization"] == "Bearer k-123"
        assert body == {"query": ["Q?Step one is long enough here."], "prompts": ["Q?"], "labels": ["7"]}
    with _ScriptedServer([(401, {}, {"detail": "bad key"})]) as srv:
        with pytest.raises(fv.ServeError, match="HTTP 401.*API key"):
            asyncio.run(fv.compute_score_async("src", "x", "1", None, url=srv.url))
    with _ScriptedServer([(503, {"Retry-After": "0"}, {"detail": "busy"})]) as srv:
        with pytest.raises(fv.ServeError, match="HTTP 503"):
            asyncio.run(fv.compute_score_async("src", "x", "1", None, url=srv.url, max_retries=2))
        assert len(srv.requests) == 3
    with pytest.raises(fv.ServeError, match="cannot reach fluxprm serve"):
        asyncio.run(fv.compute_score_async("src", "x", "1", None, url=f"http://127.0.0.1:{_free_port()}"))


# ----------------------------------------------------------------------------------------- (2) dense managers

def _dense_config(tokenizer_dir: str, *extra: str):
    return verl_config(tokenizer_dir, "reward.reward_manager.source=importlib",
                       f"reward.reward_manager.module.path={VERL_FILE}",
                       "reward.reward_manager.name=FluxPRMRewardManager", *extra)


@pytest.fixture(scope="module")
def dense_scores(tokenizer_dir, tokenizer, batch):
    """The Reward Loop manager resolved and built by verl's loaders, run as verl's worker runs it."""
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    data, *_ = batch
    cfg = _dense_config(tokenizer_dir)
    cls = resolve_reward_manager_cls(cfg)
    manager = load_reward_manager(cfg, tokenizer)
    outputs = _run_rows(manager, data)
    return cls, outputs, cls.assemble_rm_scores(data, [o["reward_score"] for o in outputs])


def test_dense_manager_is_registered_and_resolved_by_verl(tokenizer_dir):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
    from verl.trainer.ppo.reward import resolve_reward_manager_cls
    from verl.workers.reward_manager import get_reward_manager_cls as legacy_cls

    assert get_reward_manager_cls("fluxprm") is fv.FluxPRMRewardManager
    assert legacy_cls("fluxprm") is fv.FluxPRMLegacyRewardManager
    assert resolve_reward_manager_cls(_dense_config(tokenizer_dir)) is fv.FluxPRMRewardManager
    pkg = verl_config(tokenizer_dir, "reward.reward_manager.source=importlib",
                      "reward.reward_manager.module.path=pkg://fluxprm.rl.verl",
                      "reward.reward_manager.name=FluxPRMRewardManager")
    assert resolve_reward_manager_cls(pkg) is fv.FluxPRMRewardManager
    cfg = verl_config(tokenizer_dir, "reward.reward_manager.name=fluxprm")  # source: register
    assert resolve_reward_manager_cls(cfg) is fv.FluxPRMRewardManager


def test_every_step_reward_lands_on_the_token_closing_its_step(dense_scores, batch, tokenizer, rm):
    _, outputs, rm_scores = dense_scores
    data, response_ids, responses = batch
    width = data.batch["responses"].shape[1]
    assert rm_scores.shape == data.batch["responses"].shape and rm_scores.dtype == torch.float32
    for i, ids in enumerate(response_ids):
        want, positions = _expected_row(rm, tokenizer, i, ids, width)
        assert torch.allclose(rm_scores[i].double(), want, atol=1e-6), (i, rm_scores[i].nonzero(), want.nonzero())
        for step, pos in zip(SAMPLES[i][1], positions):
            assert rm_scores[i, pos] > 0
            assert tokenizer.decode(ids[:pos + 1]).rstrip().endswith(step)  # the step is complete at its token
            assert not tokenizer.decode(ids[:pos]).rstrip().endswith(step)  # and not one token earlier
        valid = int(data.batch["attention_mask"][i, PROMPT_LENGTH:].sum())
        assert valid == len(ids)
        assert torch.count_nonzero(rm_scores[i, valid:]) == 0  # padding stays 0
        info = outputs[i]["reward_extra_info"]
        assert float(rm_scores[i].sum()) == pytest.approx(info["score"], abs=1e-5)  # mean aggregation: sums up
        assert info["acc"] == (1.0 if SAMPLES[i][4] else 0.0)
    assert set(outputs[0]["reward_extra_info"]) == set(outputs[-1]["reward_extra_info"])  # same keys every row


def test_dense_reward_equals_the_scalar_reward_and_dense_false_puts_it_last(dense_scores, tokenizer_dir, tokenizer,
                                                                            batch, rm):
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.trainer.ppo.reward import load_reward_manager

    cls, outputs, rm_scores = dense_scores
    data, _, responses = batch
    scalars = rm.rewards([q for q, *_ in SAMPLES], responses, [g for _, _, g, *_ in SAMPLES])
    assert [float(o["reward_score"]) for o in outputs] == pytest.approx(scalars, abs=1e-6)
    manager = load_reward_manager(_dense_config(tokenizer_dir, "+reward.reward_kwargs.dense=false"), tokenizer)
    sparse = _run_rows(manager, data)
    last = cls.assemble_rm_scores(data, [o["reward_score"] for o in sparse])
    base = RewardManagerBase.assemble_rm_scores(data, [float(o["reward_score"]) for o in sparse])
    assert torch.equal(last, base)  # exactly verl's placement
    assert torch.allclose(last.sum(dim=1), rm_scores.sum(dim=1), atol=1e-5)
    plain = cls.assemble_rm_scores(data, [float(o["reward_score"]) for o in outputs])  # plain floats: verl's way
    assert torch.equal(plain, RewardManagerBase.assemble_rm_scores(data, [float(o["reward_score"]) for o in outputs]))


def test_dense_score_survives_pickling_as_ray_sends_it(dense_scores):
    import pickle

    _, outputs, _ = dense_scores
    score = outputs[0]["reward_score"]
    back = pickle.loads(pickle.dumps(score))
    assert type(back) is fv.DenseScore and back == score and back.placement == score.placement
    assert back.length == score.length and len(back.placement) >= 2


def test_legacy_manager_writes_the_same_dense_tensor(dense_scores, batch, tokenizer):
    from verl.workers.reward_manager import get_reward_manager_cls

    _, outputs, rm_scores = dense_scores
    data, *_ = batch
    legacy = get_reward_manager_cls("fluxprm")(tokenizer=tokenizer, num_examine=0)
    out = legacy(data, return_dict=True)
    assert torch.allclose(out["reward_tensor"], rm_scores, atol=1e-6)
    assert out["reward_extra_info"]["score"] == pytest.approx([o["reward_extra_info"]["score"] for o in outputs])
    assert torch.equal(legacy(data), out["reward_tensor"])
    with_rm = data.union(type(data).from_dict(tensors={"rm_scores": torch.ones_like(rm_scores)}))
    assert torch.equal(legacy(with_rm), torch.ones_like(rm_scores))  # verl's convention: an RM's scores win


def test_streaming_path_rewrite_from_reward_extra_info(dense_scores, batch):
    """verl's agent loop puts the float on the last token and keeps reward_extra_info in the batch; the placement
    travels as a string there and ``apply_token_rewards`` (what FluxPRMAgentLoopManager runs) restores the row."""
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

    _, outputs, rm_scores = dense_scores
    data, *_ = batch
    streamed = RewardManagerBase.assemble_rm_scores(data, [float(o["reward_score"]) for o in outputs])
    infos = [o["reward_extra_info"] for o in outputs]
    non_tensor = {key: np.array([info[key] for info in infos]) for key in infos[0]}  # as verl's _postprocess stacks
    out = DataProto.from_dict(tensors={"prompts": data.batch["prompts"], "responses": data.batch["responses"],
                                       "attention_mask": data.batch["attention_mask"], "rm_scores": streamed.clone()},
                              non_tensors=non_tensor)
    fv.apply_token_rewards(out)
    assert torch.allclose(out.batch["rm_scores"], rm_scores, atol=1e-6)
    fv.apply_token_rewards(out)  # idempotent
    assert torch.allclose(out.batch["rm_scores"], rm_scores, atol=1e-6)


def test_agent_loop_manager_class_loads_by_verls_fqn_loader():
    import cachetools  # noqa: F401  - verl's agent loop needs it and verl 0.9.1 does not declare it (a dev dependency)
    from verl.experimental.agent_loop import AgentLoopManager
    from verl.utils.import_utils import load_class_from_fqn

    cls = load_class_from_fqn("fluxprm.rl.verl.FluxPRMAgentLoopManager", "AgentLoopManager")
    assert issubclass(cls, AgentLoopManager) and cls.generate_sequences is not AgentLoopManager.generate_sequences


def _replay_agent_loop():
    """A policy stand-in for verl's agent-loop registry: returns the response ids it is given (generation needs a
    vLLM/SGLang server; everything after it is verl's and fluxprm's real code)."""
    from verl.experimental.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, register

    class ReplayAgentLoop(AgentLoopBase):
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        async def run(self, sampling_params, **kwargs):
            return AgentLoopOutput(prompt_ids=kwargs["prompt_ids"], response_ids=kwargs["response_ids"],
                                   response_mask=[1] * len(kwargs["response_ids"]), metrics=AgentLoopMetrics())

    ReplayAgentLoop.__module__, ReplayAgentLoop.__qualname__ = __name__, "ReplayAgentLoop"
    globals()["ReplayAgentLoop"] = ReplayAgentLoop  # hydra locates it by module and name, as verl registers it
    return register("fluxprm_test_replay")(ReplayAgentLoop)


def test_v1_dense_agent_loop_output_carries_the_dense_row(dense_scores, batch, tokenizer, tokenizer_dir):
    """verl's V1 worker stores ``AgentLoopOutput.as_dict()``; the fluxprm_dense agent loop (instantiated by hydra
    as verl's worker does, wrapping another registered loop) makes that dict carry the dense row."""
    import cachetools  # noqa: F401  - verl's agent loop needs it and verl 0.9.1 does not declare it (a dev dependency)
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    _replay_agent_loop()
    _, outputs, rm_scores = dense_scores
    data, response_ids, _ = batch
    cfg = verl_config(tokenizer_dir)
    entry = {"name": "fluxprm_dense", "_target_": "fluxprm.rl.verl.FluxPRMDenseAgentLoop",
             "inner": "fluxprm_test_replay"}  # one entry of agent_loop_config_path's YAML list
    loop = hydra.utils.instantiate(entry, trainer_config=DictConfigWrap(config=cfg), server_manager=None,
                                   tokenizer=tokenizer, processor=None, hf_model_type=None, dataset_cls=None,
                                   data_config=DictConfigWrap(cfg.data), tools=ToolListWrap([]))
    for i, ids in enumerate(response_ids):
        out = asyncio.run(loop.run({}, prompt_ids=[1, 2, 3], response_ids=ids))
        assert type(out).__name__ == "FluxPRMAgentLoopOutput"
        out.reward_score = outputs[i]["reward_score"]  # what verl's AgentLoopWorker._compute_score assigns
        out.extra_fields["reward_extra_info"] = outputs[i]["reward_extra_info"]
        row = out.as_dict()["rm_scores"]
        assert row.shape == (len(ids),)
        assert torch.allclose(row, rm_scores[i, :len(ids)], atol=1e-6)
        assert torch.count_nonzero(rm_scores[i, len(ids):]) == 0


def test_concurrent_run_single_calls_are_scored_as_one_batch(tokenizer_dir, tokenizer, batch):
    from verl.trainer.ppo.reward import load_reward_manager

    data, *_ = batch
    manager = load_reward_manager(_dense_config(tokenizer_dir), tokenizer)
    calls = []
    real_dense = manager.rm.dense

    def counting_dense(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real_dense(prompts, *args, **kwargs)

    manager.rm = type("Spy", (), {"dense": staticmethod(counting_dense), "alpha": manager.rm.alpha})()
    outputs = _run_rows(manager, data)
    assert calls == [len(data)]  # the worker's per-row tasks became one PRM batch
    assert len(outputs) == len(data)


# ----------------------------------------------------------------------------------------- (3) RewardLoopManager

def test_reward_loop_manager_compute_rm_score_on_cpu_with_ray(dense_scores, tokenizer_dir, batch):
    """verl's ``RewardLoopManager(config, None).compute_rm_score`` with one Ray CPU worker, the manager by config."""
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    _, outputs, rm_scores = dense_scores
    data, *_ = batch
    cfg = _dense_config(tokenizer_dir)
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        manager = RewardLoopManager(cfg, None)
        assert manager.reward_manager_cls is fv.FluxPRMRewardManager
        assert manager.reward_loop_worker_handles is not None  # no RM: verl would stream rewards with the rollout
        result = manager.compute_rm_score(data)
    finally:
        ray.shutdown()
    assert torch.allclose(result.batch["rm_scores"], rm_scores, atol=1e-6)
    keys = result.meta_info["reward_extra_keys"]
    assert {"score", "prm", "acc", fv.TOKEN_REWARDS_KEY} <= set(keys)
    assert list(result.non_tensor_batch["score"]) == pytest.approx([o["reward_extra_info"]["score"] for o in outputs])
