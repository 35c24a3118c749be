"""Teacher rewards (fluxprm.labels): formulas by hand, the real SmolLM2 judge, real HTTP judges/policies, and
end-to-end resumable label runs."""

from __future__ import annotations

import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fluxprm.labels import (LabelConfig, Labeler, NegativePool, alignment_rewards, coherence_logp,  # noqa: E402
                            coherence_rewards, cosine, fuse, fuse_steps, label_config_hash, parse_score,
                            run_label_job, score_from_logprobs)
from fluxprm.labels.encoder import FunctionEncoder  # noqa: E402
from fluxprm.labels.pipeline import _step_labels  # noqa: E402
from fluxprm.labels.quality import (CHOICES, LogprobJudge, TextJudge, _split_overlap,  # noqa: E402
                                    build_judge_prompt, clip, fill)
from fluxprm.labels.trajectory import TrajectoryItem, TrajectoryRewarder  # noqa: E402
from fluxprm.steps import prepare  # noqa: E402
from fluxprm.steps import StepConfig  # noqa: E402
from fluxprm.traces import Trace  # noqa: E402
from progress_recorder import ProgressRecorder  # noqa: E402


# ------------------------------------------------------------------------------------------ a real tiny server


class ChatServer:
    """A real OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib ``http.server``).

    ``reply(request_json) -> str`` gives the assistant text. Every request body is kept in ``requests``.
    The server shuts itself down after ``lifetime`` seconds even if the test forgets to.
    """

    def __init__(self, reply: Callable[[dict], str], lifetime: float = 90.0):
        self.reply, self.requests, self.lock = reply, [], threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(lifetime, self.httpd.shutdown)
        self.timer.daemon = True

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.requests.append(body)
                text = server.reply(body)
                payload = json.dumps({
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _content(request: dict) -> str:
    return request["messages"][-1]["content"]


# ------------------------------------------------------------------------------------------ formulas by hand


def test_alignment_cosine_by_hand():
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([3, 4], [4, 3]) == pytest.approx(24 / 25)
    assert cosine([0, 0], [1, 0]) == 0.0
    thinking = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    response = np.array([[1.0, 0.0], [0.0, 1.0]])
    # align_steps(3, 2) = [0, 0, 1]: steps 1-2 pair with a_1, step 3 with a_2
    assert alignment_rewards(thinking, response) == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])
    assert alignment_rewards(thinking, np.zeros((0, 2))) == [None, None, None]  # cut-off trace
    # a step pointing away from its response step gets 0, not a negative reward the trainer would refuse
    assert cosine([-1.0, 0.1], [1.0, 0.0]) < 0
    assert alignment_rewards(np.array([[-1.0, 0.1]]), np.array([[1.0, 0.0]])) == [0.0]


def test_coherence_by_hand_with_two_negatives():
    vec = {"x": [1.0, 0.0], "s1": [1.0, 1.0], "s2": [0.0, 1.0], "n1": [-1.0, 0.0], "n2": [1.0, -1.0]}
    enc = FunctionEncoder(lambda t: vec[t])
    e = {k: enc.encode([k])[0] for k in vec}
    tau = 0.5
    # step 2: previous s1, candidates s2 (cos 1/√2), n1 (cos -1/√2), n2 (cos 0)
    c = 1 / math.sqrt(2)
    expected = c / tau - math.log(math.exp(c / tau) + math.exp(-c / tau) + math.exp(0))
    negs = np.stack([e["n1"], e["n2"]])
    assert coherence_logp(e["s1"], e["s2"], negs, tau) == pytest.approx(expected)
    # step 1: the previous "step" is the problem x; candidates s1 (cos 1/√2), n1 (cos -1), n2 (cos 1/√2)
    expected1 = c / tau - math.log(2 * math.exp(c / tau) + math.exp(-1 / tau))
    logps, probs = coherence_rewards(e["x"], np.stack([e["s1"], e["s2"]]), [negs, negs], tau)
    assert logps == pytest.approx([expected1, expected])
    assert probs == pytest.approx([math.exp(expected1), math.exp(expected)])  # normalisation: exp(r_coh)
    assert all(lp <= 0 for lp in logps) and all(0 < p <= 1 for p in probs)
    # no negatives available -> missing, never a degenerate probability of 1
    assert coherence_rewards(e["x"], np.stack([e["s1"]]), [None], tau) == ([None], [None])


def test_softmax_fusion_with_a_missing_component():
    a, q, c = 0.5, None, 0.8
    r, w = fuse([a, q, c])
    wa, wc = math.exp(a) / (math.exp(a) + math.exp(c)), math.exp(c) / (math.exp(a) + math.exp(c))
    assert w == pytest.approx([wa, None, wc]) and w[1] is None
    assert r == pytest.approx(wa * a + wc * c)
    r3, w3 = fuse([0.2, 0.4, 0.9])
    z = math.exp(0.2) + math.exp(0.4) + math.exp(0.9)
    assert r3 == pytest.approx((0.2 * math.exp(0.2) + 0.4 * math.exp(0.4) + 0.9 * math.exp(0.9)) / z)
    assert sum(w3) == pytest.approx(1.0)
    assert fuse([None, None, None]) == (None, None)
    assert fuse([None, 0.3, None]) == (pytest.approx(0.3), [None, 1.0, None])
    rewards, weights = fuse_steps([0.5, None], [None, None], [0.8, None])
    assert rewards[1] is None and weights[1] is None and rewards[0] == pytest.approx(r)


def test_judge_score_normalisation_and_parsing():
    lp = {c: -math.inf for c in CHOICES}
    lp["0"], lp["10"] = math.log(0.25), math.log(0.25)  # renormalised over 0..10: E = 5 -> 0.5
    assert score_from_logprobs(lp) == pytest.approx(0.5)
    lp = {c: math.log(1 / 11) for c in CHOICES}
    assert score_from_logprobs(lp) == pytest.approx(0.5)
    lp["7"] = 0.0
    assert 0.5 < score_from_logprobs(lp) < 0.7
    for text, want in [("Score: 7", 7), ("score=3/10", 3), ("The step is fine.\n**Score:** 9", 9),
                       ("Reasoning... Score: 4\nFinal Score: 6", 6), ("I give it 8/10.", 8), ("blah\n10", 10),
                       ("Score: 12", None), ("looks good", None), ("", None), (None, None)]:
        assert parse_score(text) == want, text


def test_prompt_filling_and_clipping():
    assert fill("a {x} b {y}", x="{y}", y="\\frac{1}{2}") == "a {y} b \\frac{1}{2}"
    with pytest.raises(KeyError):
        fill("{missing}")
    assert clip("abc", 10) == "abc" and len(clip("x" * 100, 21)) <= 21 + 2
    steps = [f"step number {i} " * 20 for i in range(30)]
    p = build_judge_prompt("What is 1+1?", steps, 29, "2", context_chars=1000, text_chars=500)
    assert "earlier steps omitted" in p and "Step 29:" in p and "Step 1:" not in p and len(p) < 3500


def test_step_labels_carried_to_response_steps():
    trace = Trace(id="t", problem="p", response="", thinking_steps=["a thinking step that is long enough"],
                  steps=["first step", "  ", "second step"], step_labels=[1.0, None, 0.0])
    inp = prepare(trace, StepConfig())
    assert inp.response_steps == ["first step", "second step"]
    assert _step_labels(trace, inp) == [None, 1, 0]
    assert _step_labels(Trace(id="u", problem="p", response="r"), inp) is None


def test_negative_pool_is_deterministic_and_excludes_own_trace():
    items = [(i, [f"t{i} s{j}" for j in range(5)]) for i in range(10)]
    pool = NegativePool.collect(items, size=12, seed=3)
    assert len(pool) == 12 and pool.texts == NegativePool.collect(items, 12, 3).texts
    assert pool.texts != NegativePool.collect(items, 12, 4).texts
    draws = pool.draw(item_index=4, num_steps=3, k=5)
    assert draws == pool.draw(4, 3, 5)  # independent of when (which chunk) it is asked
    assert all(len(d) == 5 and len(set(d)) == 5 and all(pool.owners[i] != 4 for i in d) for d in draws)
    lonely = NegativePool.collect([(0, ["only trace step"])], size=8, seed=0)
    lonely.embed(FunctionEncoder(lambda t: [1.0, 0.0]))
    assert lonely.negatives(0, 1, 16) == [None]


def test_label_config_hash():
    base = LabelConfig()
    assert label_config_hash(base) == label_config_hash(LabelConfig(chunk_size=3, device="cpu"))
    assert label_config_hash(base) != label_config_hash(LabelConfig(tau=0.2))
    assert label_config_hash(LabelConfig(coherence=False)) == label_config_hash(LabelConfig(coherence=False, tau=0.3))
    # the default fusion keeps the hash it had before coherence_fusion existed (test_judge_v2 pins v1's value);
    # the other one is another label set, and without coherence the choice changes nothing
    assert label_config_hash(base) != label_config_hash(LabelConfig(coherence_fusion="logp"))
    assert label_config_hash(LabelConfig(coherence=False)) == label_config_hash(
        LabelConfig(coherence=False, coherence_fusion="logp"))
    with pytest.raises(ValueError, match="coherence_fusion must be one of probability, logp"):
        LabelConfig(coherence_fusion="exp")


# ------------------------------------------------------------------------------------------ real models

TRACES = [
    {"id": "a", "problem": "What is 2+3?", "answer": "5", "correct": True,
     "response": "<think>\nI need to add 2 and 3 together to get the sum.\n\nCounting up from 2 by three gives 3, 4, 5."
                 "\n\nSo the sum of 2 and 3 is 5.\n</think>\n\nAdding the numbers gives 2 + 3 = 5.\n\n\\boxed{5}"},
    {"id": "b", "problem": "What is 7*8?", "answer": "56",
     "response": "<think>\nSeven times eight is the same as seven times four, doubled.\n\nSeven times four is 28, and "
                 "doubling 28 gives 56.\n</think>\n\n7 * 8 = 56.\n\n\\boxed{56}"},
    {"id": "c", "problem": "Compute 10 - 4.", "answer": 6,
     "response": "<think>\nSubtracting four from ten leaves six units.\n\nCheck: 6 + 4 = 10, so the difference is 6."
                 "\n</think>\n\n10 - 4 = 6, so the answer is \\boxed{6}."},
    {"id": "d", "problem": "What is 9 squared?",
     "response": "<think>\nNine squared means nine multiplied by nine.\n\nNine times nine is 81, I am fairly sure of it"},
]


def _write_inputs(path: Path, bad_line: bool = True) -> Path:
    lines = [json.dumps(TRACES[0]), json.dumps(TRACES[1])]
    if bad_line:
        lines.append('{"id": "broken", "problem": ')
    lines += [json.dumps(TRACES[2]), json.dumps(TRACES[3])]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run this module's small forwards on one thread: on a shared 2-core machine, two OpenMP threads
    competing with other processes make a 135M-parameter forward ~10x slower (measured), one thread does not.
    Only run time changes; the previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory):
    from fluxprm.llm import LLMCache

    return LLMCache(tmp_path_factory.mktemp("llmcache") / "cache.sqlite")


@pytest.fixture(scope="module")
def smollm2(llm_cache):
    from fluxprm.llm import load_llm

    return load_llm("smollm2", cache=llm_cache, device="cpu")


@pytest.fixture(scope="module")
def minilm():
    from fluxprm.labels.encoder import Encoder

    return Encoder(device="cpu")


def test_smollm2_logprob_judge_scores_two_steps(smollm2):
    judge = LogprobJudge(smollm2)
    steps = ["I need to add 2 and 3 together.", "2 + 3 = 5, so the answer is 5."]
    prompts = [build_judge_prompt("What is 2+3?", steps, t, "The answer is \\boxed{5}.") for t in range(2)]
    scores = judge.score_prompts(prompts)
    assert len(scores) == 2 and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    # the one-forward reading equals the backend's choice_logprobs (two forwards) with the "1"/"10" overlap removed
    short = judge._render("Rate the step '2 + 2 = 4' from 0 to 10.")  # a short prompt keeps this cheap
    ours = judge._one_forward(short)
    ref = _split_overlap(smollm2.choice_logprobs(short, list(CHOICES)), smollm2.tokenizer)
    assert score_from_logprobs(ours) == pytest.approx(score_from_logprobs(ref), abs=1e-4)
    assert sum(math.exp(v) for v in ours.values()) <= 1.0 + 1e-6
    hits, forwards = smollm2.cache.hits, smollm2.stats["forwards"]
    assert judge.score_prompts(prompts) == scores and smollm2.cache.hits == hits + 2  # cached
    assert smollm2.stats["forwards"] == forwards


def test_http_judge_garbage_is_retried_then_missing(tmp_path):
    from fluxprm.llm import LLMCache, load_llm

    with ChatServer(lambda req: "This step looks quite reasonable to me!") as server:
        llm = load_llm(f"{server.url}#garbage-judge", cache=LLMCache(tmp_path / "c.sqlite"), max_retries=0)
        judge = TextJudge(llm, retries=2)
        assert judge.score_prompts(["judge this", "and this"]) == [None, None]
        assert len(server.requests) == 6  # 1 + 2 retries per prompt
        for prompt in ("judge this", "and this"):
            reqs = [r for r in server.requests if _content(r) == prompt]
            assert sorted(r["seed"] for r in reqs) == [0, 1, 2]
            assert sorted(r["temperature"] for r in reqs) == [0.0, 0.7, 0.7]

        # the same path through the label pipeline: quality recorded as null with a note, never 0
        src = tmp_path / "in.jsonl"
        src.write_text(json.dumps(TRACES[0]) + "\n")
        cfg = LabelConfig(judge=f"{server.url}#garbage-judge", alignment=False, coherence=False,
                          cache=str(tmp_path / "c2.sqlite"))
        run_label_job([str(src)], tmp_path / "out.jsonl", None, cfg)
        rec = json.loads((tmp_path / "out.jsonl").read_text())
        n = len(rec["thinking_steps"])
        assert n >= 1 and rec["components"]["quality"] == [None] * n
        assert rec["step_rewards"] == [None] * (n + len(rec["response_steps"]))
        assert rec["components"]["weights"] == [None] * n
        assert any(note.startswith("quality:") for note in rec["notes"])


def test_trajectory_reward_with_http_policy(tmp_path):
    from fluxprm.llm import LLMCache, load_llm

    def reply(req: dict) -> str:
        text = _content(req)
        if "Extract the reasoning template" in text:
            return "1. Add the two numbers.\n2. Report the sum."
        return "So the answer is \\boxed{5}." if req["seed"] in (0, 2, 3, 5, 7) else "I get \\boxed{6}."

    cache_path = tmp_path / "c.sqlite"
    items = [TrajectoryItem("What is 2+3?", "2 plus 3 is 5", "\\boxed{5}", "5"),
             TrajectoryItem("What is 2+3 again?", "thinking", "answer", None)]
    with ChatServer(reply) as server:
        policy = load_llm(f"{server.url}#policy", cache=LLMCache(cache_path), max_retries=0)
        results = TrajectoryRewarder(policy, rollouts=8, seed=0).run(items)
        assert results[0].reward == pytest.approx(0.625) and (results[0].n, results[0].correct) == (8, 5)
        assert results[0].template.startswith("1. Add")
        assert results[1].reward is None and "gold" in results[1].note  # no gold: no calls, a note
        solves = [r for r in server.requests if "Follow the reasoning template" in _content(r)]
        assert sorted(r["seed"] for r in solves) == list(range(8))  # distinct seeds, one per rollout
        assert all(r["temperature"] == 0.7 for r in solves) and all("Add the two numbers" in _content(r) for r in solves)
        assert len(server.requests) == 9  # 1 template + 8 rollouts

        before = len(server.requests)
        again = load_llm(f"{server.url}#policy", cache=LLMCache(cache_path), max_retries=0)
        rerun = TrajectoryRewarder(again, rollouts=8, seed=0).run(items)
        assert len(server.requests) == before  # everything came from the on-disk cache
        assert [r.reward for r in rerun] == [r.reward for r in results]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_job_end_to_end_and_resume_is_byte_identical(tmp_path, minilm, smollm2, llm_cache):
    src = _write_inputs(tmp_path / "traces.jsonl")
    cfg = LabelConfig(chunk_size=2, on_error="skip", negatives=4, cache=str(llm_cache.path), device="cpu")

    def labeler():
        return Labeler(cfg, encoder=minilm, judge_llm=smollm2)

    full = tmp_path / "full.jsonl"
    result = run_label_job([str(src)], full, None, cfg, labeler=labeler())
    assert result.stats.traces == 4 and result.stats.errors == 1
    recs = _records(full)
    assert [r["id"] for r in recs] == ["a", "b", "c", "d"]  # input order, bad record left out
    errors = _records(tmp_path / "full.errors.jsonl")
    assert len(errors) == 1 and errors[0]["line"] == 3
    for r in recs:
        t, n_resp = len(r["thinking_steps"]), len(r["response_steps"])
        assert t >= 2 and len(r["step_rewards"]) == t + n_resp
        assert r["step_rewards"][t:] == [None] * n_resp
        comps = r["components"]
        for key in ("alignment", "quality", "coherence", "coherence_logp", "weights"):
            assert len(comps[key]) == t
        assert all(0 <= q <= 1 for q in comps["quality"]) and all(0 < c <= 1 for c in comps["coherence"])
        assert all(lp <= 0 for lp in comps["coherence_logp"])
        for s, w, a, q, c in zip(r["step_rewards"], comps["weights"], comps["alignment"], comps["quality"],
                                 comps["coherence"]):
            present = [(wk, v) for wk, v in zip(w, (a, q, c)) if v is not None]
            assert sum(wk for wk, _ in present) == pytest.approx(1.0, abs=1e-5)
            assert s == pytest.approx(sum(wk * v for wk, v in present), abs=1e-5)
        assert r["trajectory_reward"] is None and r["rollouts"] is None
        assert r["label_config"] == label_config_hash(cfg)
    d = recs[3]
    assert d["response_steps"] == [] and d["components"]["alignment"] == [None] * len(d["thinking_steps"])
    assert d["components"]["weights"][0][0] is None  # alignment dropped out of the softmax
    assert recs[0]["correct"] is True and recs[0]["gold"] == "5" and recs[2]["gold"] == 6

    # interrupted after the first chunk, then resumed: byte-identical to the uninterrupted run. This is an
    # in-process interruption (KeyboardInterrupt from the progress callback, after the first checkpoint); the
    # SIGKILL of a real `fluxprm label` process and its resume is tests/test_faults.py
    # (test_sigkill_then_resume_equals_an_uninterrupted_run[label]).
    part = tmp_path / "part.jsonl"

    def stop(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_label_job([str(src)], part, None, cfg, on_progress=stop, labeler=labeler())
    assert len(_records(part)) == 2
    seen = []
    resumed = run_label_job([str(src)], part, None, cfg, resume=True, on_progress=seen.append, labeler=labeler())
    assert resumed.skipped_done == 2 and seen[0] == 2
    assert part.read_bytes() == full.read_bytes()
    assert (tmp_path / "part.errors.jsonl").read_bytes() == (tmp_path / "full.errors.jsonl").read_bytes()
    again = run_label_job([str(src)], part, None, cfg, resume=True, labeler=labeler())
    assert again.already_complete


def test_coherence_negatives_do_not_depend_on_chunking(tmp_path):
    src = _write_inputs(tmp_path / "traces.jsonl", bad_line=False)

    def embed(text: str) -> list[float]:  # a fixed, exact toy embedding: letter counts
        return [text.lower().count(ch) + 0.1 for ch in "aeinorstu"]

    outs = []
    for chunk_size in (1, 3, 4):
        cfg = LabelConfig(judge=None, chunk_size=chunk_size, negatives=3, seed=7)
        out = tmp_path / f"out{chunk_size}.jsonl"
        run_label_job([str(src)], out, None, cfg, labeler=Labeler(cfg, encoder=FunctionEncoder(embed)))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    recs = [json.loads(x) for x in outs[0].splitlines()]
    assert all(r["components"]["quality"] == [None] * len(r["thinking_steps"]) for r in recs)
    cfg8 = LabelConfig(judge=None, negatives=3, seed=8)
    run_label_job([str(src)], tmp_path / "seed8.jsonl", None, cfg8, labeler=Labeler(cfg8, encoder=FunctionEncoder(embed)))
    other = [json.loads(x) for x in (tmp_path / "seed8.jsonl").read_bytes().splitlines()]
    assert [r["components"]["coherence"] for r in other] != [r["components"]["coherence"] for r in recs]
    assert [r["components"]["alignment"] for r in other] == [r["components"]["alignment"] for r in recs]


def test_coherence_fusion_logp_fuses_the_log_prob_and_changes_nothing_else(tmp_path):
    src = _write_inputs(tmp_path / "traces.jsonl", bad_line=False)

    def embed(text: str) -> list[float]:
        return [text.lower().count(ch) + 0.1 for ch in "aeinorstu"]

    recs = {}
    for fusion in ("probability", "logp"):
        cfg = LabelConfig(judge=None, negatives=3, coherence_fusion=fusion)
        out = tmp_path / f"{fusion}.jsonl"
        run_label_job([str(src)], out, None, cfg, labeler=Labeler(cfg, encoder=FunctionEncoder(embed)))
        recs[fusion] = _records(out)
        assert all(r["label_config"] == label_config_hash(cfg) for r in recs[fusion])
    for p, lp in zip(recs["probability"], recs["logp"]):
        assert p["components"] == {**lp["components"], "weights": p["components"]["weights"]}  # same components
        comps = lp["components"]
        assert any(c is not None for c in comps["coherence_logp"])
        t = len(lp["thinking_steps"])
        for name, rec, coherence in (("probability", p, comps["coherence"]), ("logp", lp, comps["coherence_logp"])):
            expected, weights = fuse_steps(comps["alignment"], comps["quality"], coherence)
            assert rec["step_rewards"][:t] == pytest.approx(expected, abs=2e-6), name
            assert rec["components"]["weights"] == [None if w is None else pytest.approx(w, abs=2e-6)
                                                    for w in weights], name
    # a predictable step (log-prob near 0) lowers the logp-fused reward below what alignment alone gives
    assert fuse([0.8, None, -0.01])[0] < 0.8 < fuse([0.8, None, 0.99])[0]


def test_label_job_with_policy_trajectory_reward(tmp_path):
    def reply(req: dict) -> str:
        if "Extract the reasoning template" in _content(req):
            return "1. Compute it."
        return "\\boxed{56}" if "7*8" in _content(req) and req["seed"] < 6 else "\\boxed{0}"

    src = _write_inputs(tmp_path / "traces.jsonl", bad_line=False)
    with ChatServer(reply) as server:
        cfg = LabelConfig(judge=None, alignment=False, coherence=False, policy=f"{server.url}#policy",
                          rollouts=8, cache=str(tmp_path / "c.sqlite"))
        run_label_job([str(src)], tmp_path / "out.jsonl", None, cfg)
    recs = {r["id"]: r for r in _records(tmp_path / "out.jsonl")}
    assert recs["b"]["trajectory_reward"] == pytest.approx(0.75) and recs["b"]["rollouts"] == {"n": 8, "correct": 6}
    assert recs["a"]["trajectory_reward"] == 0.0
    assert recs["d"]["trajectory_reward"] is None and recs["d"]["rollouts"] is None
    assert any("gold" in n for n in recs["d"]["notes"])


def test_label_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from fluxprm.cli.label import label

    app = typer.Typer(add_completion=False)
    app.command()(label)
    app.command("other")(lambda: None)  # two commands: `label` is addressed by name, as in fluxprm's app
    runner = CliRunner()
    help_text = runner.invoke(app, ["label", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--encoder", "--judge", "--no-judge", "--no-alignment", "--no-coherence", "--policy", "--expert",
                 "--rollouts", "--tau", "--negatives", "--seed", "--resume", "--errors", "--on-error",
                 "--coherence-fusion"):
        assert flag in help_text, flag
    src = _write_inputs(tmp_path / "traces.jsonl")
    out = tmp_path / "labels.jsonl"
    result = runner.invoke(app, ["label", str(src), "-o", str(out), "--no-judge", "--no-coherence",
                                 "--cache", str(tmp_path / "c.sqlite"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    recs = _records(out)
    assert [r["id"] for r in recs] == ["a", "b", "c", "d"] and len(_records(tmp_path / "labels.errors.jsonl")) == 1
    assert all(w is None or (w[1] is None and w[2] is None) for r in recs for w in r["components"]["weights"])
    assert recs[0]["step_rewards"][0] == recs[0]["components"]["alignment"][0]  # the only component present
    off = runner.invoke(app, ["label", str(src), "-o", str(out), "--no-judge", "--no-coherence", "--no-alignment"])
    assert off.exit_code == 2 and "switched off" in off.output


def test_the_default_judge_and_encoder_load_without_progress_bars(capfd):
    """transformers draws a "Loading weights" bar per load; in a label run's log those were two runs of carriage
    returns before fluxprm's own progress lines (a new user's first `fluxprm label` showed them)."""
    from transformers.utils import logging as hf_logging

    from fluxprm.labels.encoder import Encoder
    from fluxprm.llm import TransformersLLM, smollm2_path

    capfd.readouterr()
    TransformersLLM(smollm2_path())
    Encoder()
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s]" not in err, err[-500:]
    assert hf_logging.is_progress_bar_enabled()  # restored for the caller's own loads


def test_a_chunk_without_thinking_steps_encodes_without_a_warning():
    """A chunk of response-only traces encodes no text; asking sentence-transformers ≥ 5.4 for the width by its
    old name printed a FutureWarning into a new user's first label run on a mixed pool."""
    import warnings

    from fluxprm.labels.encoder import Encoder

    encoder = Encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = encoder.encode([])
    assert empty.shape == (0, encoder.encode(["one step"]).shape[1]) and empty.shape[1] > 0


def test_a_resumed_label_run_knows_a_local_model_folder_changed(tmp_path):
    """A label run's identity held the judge's path only: `--resume` after retraining a local judge into the same
    folder would have finished the file with another judge. Folders given as models now count by their contents;
    registry, embedded and served models leave the identity as it was."""
    import shutil

    from fluxprm.embedded import smollm2_dir
    from fluxprm.labels.pipeline import _model_folders

    assert _model_folders(LabelConfig()) == {}  # defaults: the identity of existing runs is unchanged
    judge = tmp_path / "judge"
    judge.mkdir()
    for f in smollm2_dir().iterdir():
        (judge / f.name).symlink_to(f)
    before = _model_folders(LabelConfig(judge=str(judge)))
    assert set(before) == {"judge"} and _model_folders(LabelConfig(judge=str(judge))) == before
    (judge / "config.json").unlink()
    shutil.copyfile(smollm2_dir() / "config.json", judge / "config.json")
    assert _model_folders(LabelConfig(judge=str(judge))) != before


def _judged(details: list[str]) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in d.split()[1].split("/")) for d in details if d.startswith("judge ")]


def test_a_label_run_tells_its_progress_within_a_chunk(tmp_path, minilm, smollm2):
    """A chunk of 16 long traces can take ten minutes; progress counted in records stood at 0% all that time (a new
    user's default run on 6 long Sky-T1 traces showed "0/6 records" for 2.5 minutes). The display is now told the
    stage of the chunk in hand and how many of its steps the judge has graded, forward by forward, whether the
    steps are judged now or come from the LLM cache."""
    traces = [dict(t, problem=t["problem"] + " (progress test)") for t in TRACES[:3]]  # not in the module's cache
    src = tmp_path / "traces.jsonl"
    src.write_text("".join(json.dumps(t) + "\n" for t in traces))
    cfg = LabelConfig(chunk_size=2, negatives=4, device="cpu")
    labeler = Labeler(cfg, encoder=minilm, judge_llm=smollm2)
    forwards = []
    block_forward = LogprobJudge._block_forward

    def counting(self, kv, block, keep):
        forwards.append(len(block))
        return block_forward(self, kv, block, keep)

    progress = ProgressRecorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LogprobJudge, "_block_forward", counting)
        run_label_job([str(src)], tmp_path / "out.jsonl", None, cfg, on_progress=progress, labeler=labeler)
    steps = [len(r["thinking_steps"]) for r in _records(tmp_path / "out.jsonl")]
    assert progress.records == [2, 1]
    assert progress.details[0] == "sampling coherence negatives from every trace"
    chunks = "\n".join(progress.details[1:]).split("\n\n")  # "" closes each chunk
    assert len(chunks) == 2 and progress.details[-1] == ""
    for chunk, expected in zip(chunks, (steps[:2], steps[2:])):
        lines = chunk.strip("\n").split("\n")
        total = sum(expected)
        assert lines[0].startswith("encoding ") and lines[0].endswith(" steps")
        judged = _judged(lines)
        assert judged[0] == (0, total) and judged[-1] == (total, total)
        assert [done for done, _ in judged] == sorted(done for done, _ in judged)
    assert len(_judged(progress.details)) == 2 + len(forwards)  # "0/n" per chunk, then one per forward
    assert labeler.on_detail is None  # the labeler is the caller's again

    again = ProgressRecorder()
    run_label_job([str(src)], tmp_path / "again.jsonl", None, cfg, on_progress=again, labeler=labeler)
    first = sum(steps[:2])  # every step from the LLM cache: told trace by trace
    assert [j for j in _judged(again.details) if j[0]] == [(steps[0], first), (first, first), (steps[2], steps[2])]


def test_a_text_judge_tells_each_step_once_however_many_retries(tmp_path):
    from fluxprm.llm import LLMCache, load_llm

    answers = iter(["no idea", "Score: 7", "still no idea", "nothing", "nope"] + ["?"] * 10)
    with ChatServer(lambda req: next(answers)) as server:
        llm = load_llm(f"{server.url}#judge", cache=LLMCache(tmp_path / "c.sqlite"), max_retries=0, concurrency=1)
        told: list[int] = []
        scores = TextJudge(llm, retries=2).score_prompts(["first", "second"], told.append)
    assert scores[1] == 0.7 and scores[0] is None
    assert sum(told) == 2 and told == [1, 0, 1]  # "second" parsed at once; "first" given up after two retries

    # a chunk's many steps are reported slice by slice (8 requests per connection), not all at the end
    with ChatServer(lambda req: "Score: 5") as server:
        llm = load_llm(f"{server.url}#judge", cache=LLMCache(tmp_path / "c2.sqlite"), max_retries=0, concurrency=2)
        told = []
        assert TextJudge(llm).score_prompts([f"step {k}" for k in range(35)], told.append) == [0.5] * 35
        assert told == [16, 16, 3]
        assert {_content(r) for r in server.requests[:16]} == {f"step {k}" for k in range(16)}  # slices in order
