"""``fluxprm serve`` with real HTTP clients against real uvicorn servers on 127.0.0.1 (random ports).

Three kinds of server: in-process (``create_app`` + ``uvicorn.Server`` in a thread, sharing one loaded model
across several option sets), and ``fluxprm serve`` as a subprocess for the command itself and SIGTERM. Models:
the embedded fluxprm-mini (a real 135M PRM; slow enough on a CPU to keep a queue full) and a tiny random
Qwen2ForProcessRewardModel checkpoint with the real Qwen2.5 tokenizer (``builders.build_qwen_prm``), whose
/pooling answers are checked against ``builders.ref_qwen_prm`` — the model card's recipe, i.e. what
``vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`` computes. Results equal offline ``fluxprm score``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from builders import build_qwen_prm, qwen_prm_messages, ref_qwen_prm
from fluxprm.serve.batcher import Closed, DynamicBatcher, Overloaded
from fluxprm.serve.options import ServeOptions

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
SCORE_KEYS = ("score", "step_rewards", "thinking_step_rewards", "response_step_rewards", "trajectory_reward")


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def mini():
    """fluxprm-mini behind a Scorer, as ``fluxprm serve`` builds it (loaded once for the module)."""
    import torch

    from fluxprm.engine.score import Scorer
    from fluxprm.models import load_prm

    torch.set_num_threads(1)
    return Scorer(load_prm(None))


@pytest.fixture(scope="module")
def qwen_folder() -> Path:
    return build_qwen_prm(None)


@pytest.fixture(scope="module")
def qwen(qwen_folder):
    """The tiny Qwen PRM in float32 with padded batches, so the server coalesces (as it does on a GPU)."""
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.engine.score import Scorer
    from fluxprm.models import load_prm

    return Scorer(load_prm(str(qwen_folder), dtype="float32", device="cpu"), ScoreOptions(batching="padded"))


@contextlib.contextmanager
def serving(scorer: Any, **options: Any) -> Iterator[str]:
    """An in-process uvicorn server for ``create_app(ServeOptions(**options), load)``; yields its base URL.
    ``scorer`` is the Scorer, or a callable building it (run by the app's loader thread)."""
    import uvicorn

    from fluxprm.serve.app import create_app

    load = scorer if callable(scorer) and not hasattr(scorer, "score_batch") else (lambda: scorer)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ServeOptions(**options), load), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def wait_ready(url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(f"{url}/health", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.05)


def queue(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=5).json()["queue"]


def wait_for(url: str, cond, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        q = queue(url)
        if cond(q):
            return q
        assert time.monotonic() < deadline, f"queue never reached the state: {q}"
        time.sleep(0.01)


def assert_error(r: httpx.Response, status: int, words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert "Traceback" not in r.text
    err = r.json()["error"]
    assert err["code"] == status and words.lower() in err["message"].lower(), err
    return err


def same_scores(got: dict, want: dict, tol: float = 1e-5) -> None:
    for key in SCORE_KEYS:
        a, b = got[key], want[key]
        if isinstance(a, list):
            assert len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b)), (key, a, b)
        else:
            assert (a is None and b is None) or abs(a - b) <= tol, (key, a, b)
    assert got["num_steps"] == want["num_steps"] and got["truncated"] == want["truncated"]


def records(n: int) -> list[dict]:
    """Distinct short traces: R1 thinking + answer, and plain step-by-step answers."""
    out = []
    for i in range(n):
        a, b = 3 + i, 11 + 2 * i
        steps = [f"First I write down the two numbers, {a} and {b}, and line up their digits.",
                 f"Adding them digit by digit gives {a + b}, and a quick check by subtraction agrees."]
        response = f"<think>{steps[0]}\n\n{steps[1]}</think>The answer is {a + b}." if i % 2 else "\n\n".join(steps)
        out.append({"id": f"r{i}", "problem": f"What is {a} + {b}?", "response": response})
    return out


# ------------------------------------------------------------------------------------------------ the batcher alone

def test_batcher_coalesces_answers_each_job_once_and_isolates_a_failure():
    calls: list[list[str]] = []

    def score(items: list[str]) -> list[str]:
        calls.append(list(items))
        if "poison" in items:
            raise RuntimeError("boom")
        return [x.upper() for x in items]

    batcher = DynamicBatcher(score, max_wait_ms=300, max_batch_tokens=10_000)
    futures = [batcher.submit([f"a{i}", f"b{i}"], 10) for i in range(20)] + [batcher.submit(["poison"], 10)]
    futures.append(batcher.submit(["last"], 10))
    for i, f in enumerate(futures[:20]):
        assert f.result(30) == [f"A{i}", f"B{i}"]
    with pytest.raises(RuntimeError, match="boom"):
        futures[20].result(30)
    assert futures[21].result(30) == ["LAST"]
    assert len(calls[0]) > 2  # coalesced: more than one job in the first call
    assert sum(c.count("poison") for c in calls) == 2  # the coalesced call, then alone
    stats = batcher.stats()
    assert stats.failed == 1 and stats.requests == 22
    batcher.close()
    with pytest.raises(Closed):
        batcher.submit(["x"], 1)


def test_batcher_off_cancel_overload_and_drain():
    gate = threading.Event()
    calls: list[list[int]] = []

    def score(items: list[int]) -> list[int]:
        calls.append(list(items))
        gate.wait(30)
        return [x * 2 for x in items]

    batcher = DynamicBatcher(score, dynamic=False, max_queue=3)
    first = batcher.submit([1], 5)
    while batcher.stats().running_traces != 1:
        time.sleep(0.005)
    gone = batcher.submit([2], 5)
    kept = batcher.submit([3, 4], 5)
    with pytest.raises(Overloaded) as full:
        batcher.submit([5], 5)
    assert full.value.retry_after >= 1
    assert batcher.cancel(gone) and gone.cancelled()
    room = batcher.submit([6], 5)  # the cancelled job's room is free again
    gate.set()
    assert (first.result(30), kept.result(30), room.result(30)) == ([2], [6, 8], [12])
    assert calls == [[1], [3, 4], [6]]  # one job per call with batching off; the cancelled job never ran
    s = batcher.stats()
    assert (s.cancelled, s.rejected, s.traces, s.batches) == (1, 1, 4, 3)
    batcher.close(drain=True)
    assert not batcher.alive


# ------------------------------------------------------------------------------------------------ protocol parsing

def test_pooling_and_get_reward_inputs_are_cut_where_their_clients_put_the_steps():
    from fluxprm.serve.protocols import RequestError, parse_get_reward, parse_pooling

    def one(body: dict):
        return parse_pooling(body, "<extra_0>", lambda ids: "", 8)[1]

    r1 = ("<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\nAdd two and two.<extra_0>\nCheck it."
          "<extra_0>\n</think>\nIt is 4.<extra_0>trailing words<｜end▁of▁sentence｜>")
    [item] = one({"input": r1})
    assert (item.problem, item.thinking, item.response) == ("What is 2+2?", ["Add two and two.", "\nCheck it."],
                                                            ["It is 4."])
    # an untagged thought stays in the first step's text, as vLLM reads it; text after the last tag is not a step
    [item] = one({"input": "<think>hmm</think>Step one.<extra_0>Step two.<extra_0> done"})
    assert item.thinking == [] and item.response == ["<think>hmm</think>Step one.", "Step two."]
    # steps in the user turn (the Qwen PRM helper's problem-less layout): no problem
    [item] = one({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a<extra_0>b<extra_0>"}]})
    assert (item.problem, item.response) == ("", ["a", "b"])
    assert [i.tags for i in one({"input": ["x<extra_0>", "no tags", "y<extra_0><extra_0>"]})] == [1, 0, 2]
    with pytest.raises(RequestError, match="more than this server's limit"):
        one({"input": ["a<extra_0>"] * 9})
    # OpenRLHF: the prompt is cut off the query; if decoding changed it, its stripped text is found in the query
    batch = parse_get_reward({"query": ["Q: 1+1?\nA: 2", " Q: 2+2? A: 4"], "prompts": ["Q: 1+1?\n", "Q: 2+2? "]}, 8)
    assert batch.completions == ["A: 2", " A: 4"] and batch.golds == [None, None]
    assert [t.problem for t in batch.traces] == ["Q: 1+1?\n", "Q: 2+2? "]  # the prompt is the problem


# ------------------------------------------------------------------------------------------------ HTTP faults

def test_bad_requests_get_one_json_error_each(mini):
    limit = 0.01  # MiB: 10,485 bytes
    with serving(mini, api_key="sekret", max_body_mb=limit, max_request_traces=4) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ready"  # no key needed
        ok = {"records": records(1)}
        assert_error(httpx.post(f"{url}/v1/score", json=ok), 401, "API key")
        assert httpx.post(f"{url}/v1/score", json=ok).headers["www-authenticate"] == "Bearer"
        assert_error(httpx.post(f"{url}/v1/score", json=ok, headers={"Authorization": "Bearer nope"}), 401, "key")
        assert_error(httpx.get(f"{url}/v1/models", headers={"x-api-key": "sekre"}), 401, "key")
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer sekret"}, timeout=60) as c:
            assert c.post("/v1/score", json=ok).status_code == 200
            assert httpx.post(f"{url}/v1/score", json=ok, headers={"x-api-key": "sekret"}).status_code == 200
            assert c.get("/v1/models").json()["data"][0]["id"] == "fluxprm-mini"
            assert_error(c.post("/v1/score", content=b'{"records": [ {"problem": '), 400, "not valid JSON")
            assert_error(c.post("/pooling", content=b"\xff\xfe{"), 400, "not valid JSON")
            assert_error(c.post("/get_reward", content=b""), 400, "empty")
            big = json.dumps({"records": [{"problem": "x", "response": "y" * 20_000}]}).encode()
            assert_error(c.post("/v1/score", content=big), 413, "limit")

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
                for _ in range(6):
                    yield b" " * 4096
            assert_error(c.post("/v1/score", content=chunks()), 413, "limit")
            assert_error(c.post("/v1/score", json={"records": records(5)}), 413, "max-request-traces")
            assert_error(c.post("/v1/score", json={"records": 5}), 400, "'records' must be an array")
            assert_error(c.post("/v1/score", json={"traces": []}), 400, "records")
            assert_error(c.post("/get_reward", json={"query": "x", "prompts": ["a", "b"]}), 400, "one per query")
            assert_error(c.post("/get_reward", json={"prompts": ["a"]}), 400, "missing 'query'")
            assert_error(c.post("/pooling", json={"input": "a<extra_0>", "task": "embed"}), 400, "token_classify")
            assert_error(c.post("/pooling", json={"input": "a<extra_0>", "model": "gpt-9"}), 404, "does not exist")
            assert_error(c.get("/nowhere"), 404, "no route")
            assert_error(c.get("/v1/score"), 405, "not allowed")
            # per-record problems are per-record errors in a 200, next to the good record
            r = c.post("/v1/score", json={"records": [{"problem": "only a problem"}, records(1)[0], 7]})
            assert r.status_code == 200
            results = r.json()["results"]
            assert [("error" in x) for x in results] == [True, False, True]
            assert "response" in results[0]["error"] and results[2]["line"] == 3
            # a lone surrogate costs only its own trace (it was a 400 for the whole request), and an id beyond 64
            # bits comes back exact (orjson had made it 1.2345678901234568e+29), as `fluxprm score` keeps both
            good = dict(records(1)[0], id=123456789012345678901234567890)
            body = json.dumps({"records": [good, dict(records(1)[0], response="bad \ud800 text")]}).encode()
            assert b"\\ud800" in body
            r = c.post("/v1/score", content=body)
            assert r.status_code == 200, r.text
            first, second = r.json()["results"]
            assert first["id"] == "123456789012345678901234567890" and first["score"] is not None
            assert "lone surrogate" in second["error"] and second["line"] == 2
            assert_error(c.post("/v1/score", content=b'{"records": [{"problem": "p", "response": NaN}]}'), 400,
                         "not valid JSON")
            assert_error(c.post("/v1/score", content=b'{"records": [{"problem": "p", "response": 1e400}]}'), 400,
                         "infinity")
            # a client that hangs up halfway through its body costs nothing and breaks nothing
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as half:
                half.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\n"
                             b"Content-Length: 5000\r\n\r\n{\"records\": [")
                time.sleep(0.2)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/health").json()["client_gone"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert c.post("/v1/score", json=ok).status_code == 200
        health = httpx.get(f"{url}/health").json()
        assert health["answered"]["401"] == 4 and "500" not in health["answered"]


def test_health_says_loading_then_ready_and_reports_a_failed_load(mini):
    release = threading.Event()

    def slow_load():
        assert release.wait(60)
        return mini

    with serving(slow_load) as url:
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        err = assert_error(httpx.post(f"{url}/v1/score", json={"records": records(1)}), 503, "loading")
        assert err["type"] == "ServiceUnavailable"
        release.set()
        assert wait_ready(url)["model"] == "fluxprm-mini"

    def broken_load():
        raise ValueError("no model named 'nope'")

    with serving(broken_load) as url:
        deadline = time.monotonic() + 30
        while (h := httpx.get(f"{url}/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert h.status_code == 503 and h.json() == {"status": "failed", "error": "no model named 'nope'"}
        assert_error(httpx.post(f"{url}/pooling", json={"input": "a<extra_0>"}), 503, "failed to load")


# ------------------------------------------------------------------------------------------------ vLLM /pooling

def test_pooling_answers_as_vllm_does_for_a_qwen_prm(qwen, qwen_folder):
    """The request bodies of vLLM's docs and examples; the pairs are softmax([l0, l1]) at every <extra_0>."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_folder))
    problem = "Sue has 18 pink flamingos and 6 white ones. How many more pink than white?"
    steps = ["There are 18 pink flamingos.", "There are 6 white flamingos.", "18 - 6 = 12, so the answer is 12."]
    want = [[1 - r, r] for r in ref_qwen_prm(qwen_folder, problem, steps)]
    # what PRM clients send to vLLM: the model-card chat rendered with the chat template
    text = tok.apply_chat_template(qwen_prm_messages(problem, steps), tokenize=False, add_generation_prompt=False)
    other_steps = ["Half of 10 is 5.", "So the answer is 5."]
    other = tok.apply_chat_template(qwen_prm_messages("What is half of 10?", other_steps), tokenize=False,
                                    add_generation_prompt=False)

    def close(got: list, expected: list) -> None:
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert abs(g[0] - e[0]) <= 1e-5 and abs(g[1] - e[1]) <= 1e-5 and abs(sum(g) - 1) <= 1e-6

    with serving(qwen) as url, httpx.Client(base_url=url, timeout=60) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]  # as vLLM's pooling_online.py does
        r = c.post("/pooling", json={"model": model, "input": text})
        body = r.json()
        assert r.status_code == 200 and body["object"] == "list" and body["model"] == model
        assert body["id"].startswith("pool-") and isinstance(body["created"], int)
        assert set(body["usage"]) >= {"prompt_tokens", "total_tokens"} and body["usage"]["prompt_tokens"] > 0
        [item] = body["data"]
        assert (item["index"], item["object"]) == (0, "pooling")
        close(item["data"], want)
        # chat form, content as text parts (pooling_online.py's second request)
        messages = [{"role": "user", "content": [{"type": "text", "text": problem}]},
                    {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        close(c.post("/pooling", json={"model": model, "messages": messages}).json()["data"][0]["data"], want)
        # a batch of inputs with the task named (docs: "For rewards, use task: token_classify")
        both = c.post("/pooling", json={"model": model, "input": [text, other], "task": "token_classify"}).json()
        close(both["data"][0]["data"], want)
        close(both["data"][1]["data"], [[1 - r, r] for r in ref_qwen_prm(qwen_folder, "What is half of 10?",
                                                                         other_steps)])
        # token ids, decoded with the served tokenizer
        close(c.post("/pooling", json={"model": model, "input": tok.encode(text)}).json()["data"][0]["data"], want)
        # the docs' offline PRM example: three tags, empty steps repeat the reward before them
        pairs = c.post("/pooling", json={"input": "Hello, my name is<extra_0><extra_0><extra_0>"}).json()
        assert len(pairs["data"][0]["data"]) == 3 and pairs["data"][0]["data"][0] == pairs["data"][0]["data"][2]
        # no step tag: nothing to read, as vLLM's STEP pooler returns (the examples' "vLLM is great!")
        plain = c.post("/pooling", json={"model": model, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "vLLM is great!"}]}]}).json()
        assert plain["data"] == [{"index": 0, "object": "pooling", "data": []}]
        assert_error(c.post("/pooling", json={"model": model, "messages": [
            {"role": "user", "content": "a<extra_0>"}, {"role": "assistant", "content": "b<extra_0>"}]}),
            400, "more than one turn")
        assert c.post("/pooling", json={"model": "Qwen/Qwen2.5-Math-PRM-7B", "input": text}).status_code == 404


# ------------------------------------------------------------------------------------------------ OpenRLHF /get_reward

def test_get_reward_is_the_openrlhf_remote_rm_contract(mini):
    from fluxprm.rl.rewards import mix, prm_reward

    template = "<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n" \
               "<|im_start|>assistant\n"
    prompts = [template.format("What is 6 times 7?"), template.format("What is 6 times 7?"),
               template.format("Name the capital of France.")]
    completions = ["<think>\nSix sevens: 7, 14, 21, 28, 35, 42.\n\nSo the product is 42.\n</think>\n\n"
                   "The answer is \\boxed{42}.<|im_end|>",
                   "Six times seven is forty-one, I believe, after counting.\n\nThe answer is \\boxed{41}.<|im_end|>",
                   "The capital of France is Paris, on the Seine.<|im_end|>"]
    body = {"query": [p + c for p, c in zip(prompts, completions)], "prompts": prompts, "labels": ["42", "42", ""]}
    with serving(mini, beta=0.75) as url, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/get_reward", json=body)
        unlabelled = c.post("/get_reward", json={"query": body["query"], "prompts": prompts}).json()
        empty = c.post("/get_reward", json={"query": [prompts[0], body["query"][0]], "prompts": prompts[:2],
                                            "labels": ["42", "42"]})
    assert r.status_code == 200
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"}
    logs = out["extra_logs"]
    assert all(len(v) == 3 and all(isinstance(x, float) for x in v) for v in [out["rewards"], *logs.values()])
    assert logs["outcome_reward"] == [1.0, 0.0, 0.0] and logs["prm_scored"] == [1.0, 1.0, 1.0]
    # the same samples scored offline, through the library's reward formula
    results = mini.score_batch([{"problem": q, "response": c.removesuffix("<|im_end|>")}
                                for q, c in zip(["What is 6 times 7?"] * 2 + ["Name the capital of France."],
                                                completions)])
    alpha = mini.prm.alpha
    for i, res in enumerate(results):
        prm = prm_reward(res, alpha)
        assert abs(logs["prm_reward"][i] - prm) <= 1e-5
        assert abs(out["rewards"][i] - mix(prm, [1.0, 0.0, None][i], 0.75)) <= 1e-5
    assert out["scores"] == out["rewards"] and 0.0 <= min(out["rewards"]) <= max(out["rewards"]) <= 1.0
    assert unlabelled["extra_logs"]["outcome_reward"] == [0.0, 0.0, 0.0]
    assert all(abs(u - 0.75 * p) <= 1e-9 for u, p in zip(unlabelled["rewards"], logs["prm_reward"]))
    # a sample the PRM cannot score (an empty completion) costs that sample, not the request
    assert empty.status_code == 200
    e = empty.json()
    assert e["extra_logs"]["prm_scored"] == [0.0, 1.0] and e["extra_logs"]["prm_reward"][0] == 0.0
    assert e["rewards"][0] == 0.0 and abs(e["rewards"][1] - out["rewards"][0]) <= 1e-5


# ------------------------------------------------------------------------------------------------ load and exactly-once

def test_64_concurrent_requests_each_answered_once_equal_to_offline_score(qwen, qwen_folder, tmp_path):
    recs = records(64)
    src = tmp_path / "traces.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "scores.jsonl"
    offline = subprocess.Popen([sys.executable, "-m", "fluxprm", "score", str(src), "-m", str(qwen_folder),
                                "--dtype", "float32", "--device", "cpu", "--threads", "1", "--batching", "padded",
                                "-o", str(out)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    async def drive(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(*[c.post("/v1/score", json={"records": [r]}) for r in recs])

    with serving(qwen, max_wait_ms=200) as url:
        responses = asyncio.run(drive(url))
        health = httpx.get(f"{url}/health").json()
    assert offline.wait(240) == 0, offline.stderr.read()
    want = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.status_code for r in responses] == [200] * 64
    got = [r.json()["results"] for r in responses]
    assert all(len(g) == 1 for g in got)
    for rec, [result], expected in zip(recs, got, want):
        assert result["id"] == rec["id"] == expected["id"]
        same_scores(result, expected)
    q = health["queue"]
    assert q["requests"] == 64 and q["traces"] == 64 and health["answered"] == {"200": 64}
    assert q["max_batch_requests"] > 1 and q["batches"] < 64  # requests were coalesced
    assert health["dynamic_batching"].startswith("on: requests coalesced")


def test_no_coalescing_where_the_engine_runs_one_trace_per_forward(mini):
    """A coalesced batch of single forwards costs what its requests cost alone: requests go one per call."""
    from fluxprm.engine.options import ScoreOptions
    from fluxprm.engine.score import Scorer

    single = Scorer(mini.prm, ScoreOptions(batching="single"))
    with serving(single, max_wait_ms=200) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda r: httpx.post(f"{url}/v1/score", json={"records": [r]}, timeout=120),
                                records(4)))
        health = httpx.get(f"{url}/health").json()
    assert [a.status_code for a in answers] == [200] * 4
    assert health["queue"]["max_batch_requests"] == 1 and health["queue"]["batches"] == 4
    assert health["dynamic_batching"].startswith("on, not coalescing")


def test_full_queue_is_503_and_a_client_that_leaves_poisons_nothing(mini):
    long_steps = [f"Step {k}: we compute the partial sum of the series up to term {k} and compare it with the "
                  "bound, which still holds because every term is positive and the terms decrease." for k in range(40)]
    slow = {"id": "slow", "problem": "Show that the series converges.", "response": "\n\n".join(long_steps)}
    quick = [{"id": f"q{i}", "problem": f"What is {i} + {i}?", "response": f"Doubling {i} gives {2 * i}, "
              f"so the answer is {2 * i}."} for i in range(3)]
    with serving(mini, max_queue=2) as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
        post = lambda recs: httpx.post(f"{url}/v1/score", json={"records": recs}, timeout=300)  # noqa: E731
        first = pool.submit(post, [slow])
        wait_for(url, lambda q: q["running_traces"] == 1)
        # a raw client sends a request, waits until it is queued, and hangs up
        leaver = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        body = json.dumps({"records": [quick[0]]}).encode()
        leaver.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(url, lambda q: q["waiting_traces"] == 1)
        leaver.close()
        wait_for(url, lambda q: q["cancelled"] == 1 and q["waiting_traces"] == 0)
        second, third = pool.submit(post, [quick[1]]), pool.submit(post, [quick[2]])
        wait_for(url, lambda q: q["waiting_traces"] == 2)
        refused = post([quick[0]])
        err = assert_error(refused, 503, "queue is full")
        assert int(refused.headers["retry-after"]) >= 1 and err["type"] == "ServiceUnavailable"
        assert_error(post(quick), 413, "more than this server's queue holds")  # could never be admitted
        answers = [f.result(300) for f in (first, second, third)]
        health = httpx.get(f"{url}/health").json()
    assert [a.status_code for a in answers] == [200, 200, 200]
    q = health["queue"]
    assert (q["traces"], q["cancelled"], q["rejected"]) == (3, 1, 1)  # the leaver's trace was never scored
    assert health["client_gone"] == 1
    expected = mini.score_batch([slow, *quick[1:]])
    for answer, want in zip(answers, expected):
        same_scores(answer.json()["results"][0], want.to_json())


# ------------------------------------------------------------------------------------------------ the command

def test_fluxprm_serve_sigterm_finishes_accepted_requests(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", "serve", "--port", "0", "--threads", "1",
                             "--max-wait-ms", "20"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("listening on http://" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        url = next(line for line in lines if "listening on" in line).split("listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        wait_ready(url)
        recs = records(6)
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/score", json={"records": [r]}, timeout=300) for r in recs]
            wait_for(url, lambda q: q["requests"] == 6)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(300) for f in futures]
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json()["results"][0]["id"] for a in answers] == [r["id"] for r in recs]
    log = "".join(lines)
    assert "Traceback" not in log and "answered 6 × 200" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)


def test_fluxprm_serve_refuses_a_busy_port_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "fluxprm", "serve", "--port", str(port)], env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("flag", ["--max-body-mb", "--max-wait-ms", "--grade-timeout", "--shutdown-timeout"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_option_value_is_a_usage_error(flag, value):
    """``--max-body-mb inf`` died in a traceback (int(inf)); ``--max-wait-ms inf`` started a server that never
    answered a padded batch. No float option means "nan" or "inf"."""
    from typer.testing import CliRunner

    from fluxprm.cli import app
    from fluxprm.serve.options import ServeOptions

    res = CliRunner().invoke(app, ["serve", "--port", "0", flag, value], prog_name="fluxprm")
    assert res.exit_code == 2 and res.stderr.startswith(f"error: Invalid value for {flag}: must be a finite number")
    with pytest.raises(ValueError, match="must be a finite number"):
        ServeOptions(**{flag.removeprefix("--").replace("-", "_"): float(value)})
