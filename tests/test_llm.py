"""fluxprm.llm against real servers on 127.0.0.1: llama.cpp's OpenAI-compatible server running the embedded
SmolLM2-135M-Instruct GGUF, and a small stdlib HTTP server that fails, stalls or proxies on a script.
The llama.cpp tests skip when llama-cpp-python[server] is not installed (scripts/build_llama_cpp_wheel.sh)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fluxprm.embedded import smollm2_gguf_path
from fluxprm.llm import GenParams, LLMCache, LLMError, OpenAICompatLLM, TransformersLLM, load_llm

API_KEY = "sk-fluxprm-test"
MODEL = "smollm2"
CHAT = [{"role": "user", "content": "What is 2+2? Answer in one short sentence."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ a scripted OpenAI endpoint


class ScriptedServer:
    """A real HTTP server speaking the OpenAI API. Each request consumes the next action of ``script``
    (then ``default``): ``("status", code)``, ``("status", code, headers)``, ``("sleep", seconds, text)``,
    ``("ok", text)`` or ``("proxy",)`` (forward to ``upstream``). ``honor_n`` answers ``n`` choices."""

    def __init__(self, script=(), default=("ok", "canned answer"), upstream=None, honor_n=False):
        self.script = list(script)
        self.default = default
        self.upstream = upstream
        self.honor_n = honor_n
        self.requests: list[tuple[str, dict]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next(self):
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body: bytes, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": "only-model", "object": "model", "owned_by": "me"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = json.loads(raw or b"{}")
                with server._lock:
                    server.requests.append((self.path, req))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._act(server._next(), req, raw)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _act(self, action, req, raw):
                kind = action[0]
                if kind == "status":
                    err = {"error": {"message": f"scripted {action[1]}", "type": "server_error"}}
                    self._send(action[1], json.dumps(err).encode(), action[2] if len(action) > 2 else None)
                elif kind == "proxy":
                    self._proxy(raw)
                else:
                    if kind == "sleep":
                        time.sleep(action[1])
                    self._send(200, json.dumps(server._completion(self.path, req, action[-1])).encode())

            def _proxy(self, raw: bytes):
                target = server.upstream.rstrip("/") + self.path[len("/v1") :]
                headers = {"Content-Type": "application/json", "Authorization": self.headers.get("Authorization", "")}
                try:
                    with urllib.request.urlopen(urllib.request.Request(target, raw, headers), timeout=120) as r:
                        self._send(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.read())

        return Handler

    def _completion(self, path: str, req: dict, text: str) -> dict:
        n = req.get("n", 1) if self.honor_n else 1
        if path.endswith("/chat/completions"):
            choices = [{"index": i, "message": {"role": "assistant", "content": f"{text} #{i}" if n > 1 else text},
                        "finish_reason": "stop"} for i in range(n)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": f"{text} #{i}" if n > 1 else text, "finish_reason": "stop"}
                       for i in range(n)]
            obj = "text_completion"
        return {"id": "cmpl-1", "object": obj, "created": 0, "model": req.get("model", "m"), "choices": choices,
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _llm(url, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAICompatLLM(kw.pop("model", MODEL), base_url=url, api_key=API_KEY, **kw)


# ---------------------------------------------------------------------------- retries, timeouts, n, errors


def test_retries_500_then_succeeds(tmp_path):
    with ScriptedServer([("status", 500), ("status", 503)], default=("ok", "fine")) as srv:
        llm = _llm(srv.url, cache=LLMCache(tmp_path / "c.sqlite"))
        assert llm.generate([CHAT], GenParams(max_tokens=8)) == [["fine"]]
        assert len(srv.requests) == 3
        assert llm.stats["retries"] == 2 and llm.stats["requests"] == 3


def test_retries_429_with_retry_after():
    with ScriptedServer([("status", 429, {"Retry-After": "0"})], default=("ok", "after 429")) as srv:
        assert _llm(srv.url).generate(["raw text prompt"], GenParams(max_tokens=4)) == [["after 429"]]
        assert [path for path, _ in srv.requests] == ["/v1/completions"] * 2


def test_gives_up_after_max_retries():
    with ScriptedServer(default=("status", 500)) as srv:
        llm = _llm(srv.url, max_retries=2)
        with pytest.raises(LLMError, match="HTTP 500 after 3 attempt"):
            llm.generate([CHAT], GenParams(max_tokens=4))
        assert len(srv.requests) == 3


def test_client_error_is_not_retried():
    with ScriptedServer(default=("status", 400)) as srv:
        with pytest.raises(LLMError, match="HTTP 400 after 1 attempt"):
            _llm(srv.url, max_retries=3).generate([CHAT], GenParams(max_tokens=4))
        assert len(srv.requests) == 1


def test_timeout_then_retry_succeeds():
    # The first answer would come after 3 s ("slow"); the 0.5 s timeout abandons it and the retry gets "fast".
    with ScriptedServer([("sleep", 3.0, "slow")], default=("ok", "fast")) as srv:
        llm = _llm(srv.url, timeout=0.5, max_retries=2)
        assert llm.generate([CHAT], GenParams(max_tokens=4)) == [["fast"]]
        assert llm.stats["retries"] == 1 and len(srv.requests) == 2


def test_timeout_gives_up():
    with ScriptedServer(default=("sleep", 2.0, "too late")) as srv:
        with pytest.raises(LLMError, match="APITimeoutError after 2 attempt"):
            _llm(srv.url, timeout=0.3, max_retries=1).generate([CHAT], GenParams(max_tokens=4))


def test_connection_refused_gives_up():
    llm = _llm(f"http://127.0.0.1:{_free_port()}/v1", max_retries=1)
    with pytest.raises(LLMError, match="server up"):
        llm.generate([CHAT], GenParams(max_tokens=4))
    assert llm.stats["requests"] == 2


def test_server_with_n_gets_one_request():
    with ScriptedServer(default=("ok", "s"), honor_n=True) as srv:
        llm = _llm(srv.url)
        assert llm.generate([CHAT], GenParams(n=3, temperature=1.0, seed=5)) == [["s #0", "s #1", "s #2"]]
        assert llm.n_supported is True and len(srv.requests) == 1 and srv.requests[0][1]["n"] == 3


def test_server_ignoring_n_gets_one_request_per_seed():
    with ScriptedServer(default=("ok", "s"), honor_n=False) as srv:
        llm = _llm(srv.url)
        assert llm.generate([CHAT, CHAT + [{"role": "user", "content": "again"}]],
                            GenParams(n=3, temperature=1.0, seed=5)) == [["s"] * 3] * 2
        assert llm.n_supported is False
        seeds = sorted(req.get("seed") for _, req in srv.requests)
        assert seeds == [5, 5, 6, 6, 7, 7]  # the first request per prompt asked for n=3 and got 1


def test_concurrent_requests_keep_prompt_order():
    with ScriptedServer(default=("sleep", 0.2, "x")) as srv:
        llm = _llm(srv.url, concurrency=8)
        prompts = [f"prompt {i}" for i in range(8)]
        out = llm.generate(prompts, GenParams(max_tokens=2))
        assert out == [["x"]] * 8
        assert sorted(req["prompt"] for _, req in srv.requests) == sorted(prompts)
        assert srv.max_in_flight > 1  # the requests overlapped


# ------------------------------------------------------------------------------------------------ the cache


def test_cache_survives_kill_9(tmp_path):
    path = tmp_path / "cache.sqlite"
    code = (
        "import os, signal, sys\n"
        "from fluxprm.llm import LLMCache\n"
        "c = LLMCache(sys.argv[1])\n"
        "for i in range(20): c.put(f'k{i}', 'm', [f'v{i}'])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)])
    assert proc.returncode == -signal.SIGKILL
    cache = LLMCache(path)
    assert len(cache) == 20 and cache.get("k7") == ["v7"] and cache.get("nope") is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_threads(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")

    def work(t):
        for i in range(50):
            cache.put(f"{t}-{i}", "m", [str(i)])
            assert cache.get(f"{t}-{i}") == [str(i)]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 400 and cache.hits == 400


def test_cache_key_covers_model_prompt_and_params():
    k = LLMCache.key("m", CHAT, GenParams())
    assert k == LLMCache.key("m", [dict(d) for d in CHAT], GenParams())
    assert len({k, LLMCache.key("m2", CHAT, GenParams()), LLMCache.key("m", "raw", GenParams()),
                LLMCache.key("m", CHAT, GenParams(seed=1)), LLMCache.key("m", CHAT, GenParams(n=2))}) == 5


# --------------------------------------------------------------------------------------------- load_llm


def test_load_llm_specs(monkeypatch, tmp_path):
    with ScriptedServer() as srv:
        llm = load_llm(f"{srv.url}#my-model", cache=tmp_path / "c.sqlite", api_key=API_KEY)
        assert isinstance(llm, OpenAICompatLLM) and llm.name == "my-model" and llm.base_url == srv.url
        assert load_llm(srv.url, cache=False).name == "only-model"  # the server's only model
    monkeypatch.setenv("FLUXPRM_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    llm = load_llm("openai:gpt-test", cache=False)
    assert llm.name == "gpt-test" and llm.base_url == "http://127.0.0.1:9/v1" and llm.cache is None
    with pytest.raises(ValueError, match="cannot load LLM"):
        load_llm(str(tmp_path / "no-such-folder"), cache=False)


# Local transformers tests run before the llama.cpp server starts: two busy processes on a small box
# oversubscribe torch's threads and slow both down many times over.

# ------------------------------------------------------------------------ transformers with SmolLM2-135M


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    import torch

    # One intra-op thread: a 135M model barely gains from two, and on a shared, busy box OpenMP
    # spin-waiting makes two threads 10-20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_llm("smollm2", cache=LLMCache(tmp_path_factory.mktemp("llm") / "cache.sqlite"))
    finally:
        torch.set_num_threads(threads)


def _uncached(llm):
    """The same model and tokenizer without a cache."""
    return TransformersLLM(llm.model, llm.tokenizer, name=llm.name, cache=None)


def test_transformers_greedy(smollm2):
    assert isinstance(smollm2, TransformersLLM)
    prompts = [CHAT, "The capital of France is", [{"role": "user", "content": "Say hello."}]]
    batched = smollm2.generate(prompts, GenParams(max_tokens=10))
    assert all(len(r) == 1 and r[0].strip() for r in batched)
    # Left padding in the batch must not change greedy outputs.
    plain = _uncached(smollm2)
    assert [plain.generate([p], GenParams(max_tokens=10))[0] for p in prompts] == batched


def test_transformers_cache_hit(smollm2):
    params = GenParams(max_tokens=6, stop=["\n"])
    first = smollm2.generate(["Once upon a time"], params)
    forwards, hits = smollm2.stats["forwards"], smollm2.cache.hits
    assert smollm2.generate(["Once upon a time"], params) == first
    assert smollm2.stats["forwards"] == forwards and smollm2.cache.hits == hits + 1
    assert first[0][0].strip() and "\n" not in first[0][0]


def test_transformers_sampling_with_seed(smollm2):
    params = GenParams(max_tokens=8, temperature=1.0, n=3, seed=7)
    llm = _uncached(smollm2)
    a = llm.generate([CHAT], params)[0]
    b = llm.generate(["Something else first", CHAT], params)[1]
    assert len(a) == 3 and a == b and len(set(a)) > 1


def test_transformers_choice_logprobs(smollm2):
    import torch

    prompt = [{"role": "user", "content": "Rate the answer '2+2=4' from 0 to 10. Reply with the number only."}]
    choices = [str(i) for i in range(11)]
    lp = smollm2.choice_logprobs(prompt, choices)
    assert set(lp) == set(choices) and all(math.isfinite(v) and v < 0 for v in lp.values())
    assert sum(math.exp(lp[c]) for c in choices[:10]) <= 1.0 + 1e-5  # distinct single tokens

    # Independent reference: "10" is two tokens here; score it with two plain forwards.
    tok, model = smollm2.tokenizer, smollm2.model
    ids = tok(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False).input_ids
    ten = tok("10", add_special_tokens=False).input_ids
    assert len(ten) == 2
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([ids + ten])).logits[0].float(), -1)
    ref = float(full[len(ids) - 1, ten[0]] + full[len(ids), ten[1]])
    assert lp["10"] == pytest.approx(ref, abs=1e-4)
    assert lp["7"] == pytest.approx(float(full[len(ids) - 1, tok("7", add_special_tokens=False).input_ids[0]]), abs=1e-4)

    hits = smollm2.cache.hits
    assert smollm2.choice_logprobs(prompt, choices) == lp
    assert smollm2.cache.hits == hits + 1


# ----------------------------------------------------------------------------------- llama.cpp's server


def _llama_server_missing() -> str | None:
    for mod in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            return f"llama-cpp-python[server] is not installed ({mod} missing): run scripts/build_llama_cpp_wheel.sh"
    return None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    reason = _llama_server_missing()
    if reason and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} — in CI the real-server tests must run, not skip")
    if reason:
        pytest.skip(reason)
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
           "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
           # One thread: ~90 tokens/s for this model, and no OpenMP spin-waiting against a busy pytest box.
           "--n_threads", "1", "--n_threads_batch", "1", "--api_key", API_KEY, "--verbose", "False"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {API_KEY}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready after 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_llama_chat_and_completion(llama_server, tmp_path):
    llm = _llm(llama_server, cache=LLMCache(tmp_path / "c.sqlite"))
    chat, raw = llm.generate([CHAT, "The capital of France is"], GenParams(max_tokens=16))
    assert len(chat) == 1 and chat[0].strip()
    assert len(raw) == 1 and raw[0].strip()
    assert "4" in chat[0]


def test_llama_wrong_key_is_not_retried(llama_server):
    llm = OpenAICompatLLM(MODEL, base_url=llama_server, api_key="wrong", max_retries=3)
    with pytest.raises(LLMError, match="HTTP 401 after 1 attempt"):
        llm.generate([CHAT], GenParams(max_tokens=4))


def test_llama_n_samples_with_seed(llama_server):
    params = GenParams(max_tokens=12, temperature=1.0, n=3, seed=1234)
    llm = _llm(llama_server)
    samples = llm.generate([CHAT], params)[0]
    assert len(samples) == 3 and all(s.strip() for s in samples)
    assert llm.n_supported is False  # llama.cpp's server answers one choice whatever n says
    assert llm.stats["requests"] == 3
    assert len(set(samples)) > 1  # different seeds, different samples
    again = _llm(llama_server).generate([CHAT], params)[0]
    assert again == samples  # same seeds, same samples (no cache involved)


def test_llama_cache_hit_on_rerun(llama_server, tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    prompts = [CHAT, "One, two, three,"]
    first = _llm(llama_server, cache=cache)
    out = first.generate(prompts, GenParams(max_tokens=8))
    assert first.stats["requests"] == 2 and cache.hits == 0
    assert first.generate(prompts, GenParams(max_tokens=8)) == out
    assert first.stats["requests"] == 2 and cache.hits == 2
    # A rerun in a new process would find the same file: the server is not even needed.
    rerun = _llm(f"http://127.0.0.1:{_free_port()}/v1", cache=LLMCache(cache.path))
    assert rerun.generate(prompts, GenParams(max_tokens=8)) == out
    assert rerun.stats["requests"] == 0 and rerun.stats["cache_hits"] == 2


def test_llama_retries_through_a_failing_proxy(llama_server):
    with ScriptedServer([("status", 500), ("status", 500)], default=("proxy",), upstream=llama_server) as proxy:
        llm = _llm(proxy.url)
        direct = _llm(llama_server).generate([CHAT], GenParams(max_tokens=12))
        assert llm.generate([CHAT], GenParams(max_tokens=12)) == direct
        assert len(proxy.requests) == 3 and llm.stats["retries"] == 2


def test_llama_choice_logprobs(llama_server):
    prompt = [{"role": "user", "content": "Rate the answer '2+2=4' from 0 to 10. Reply with the number only."}]
    lp = _llm(llama_server).choice_logprobs(prompt, [str(i) for i in range(10)])
    finite = [v for v in lp.values() if math.isfinite(v)]
    assert finite and all(v <= 0 for v in finite)
    assert sum(math.exp(v) for v in finite) <= 1.0 + 1e-6


# -------------------------------------------------------------------------------- the embedded checkpoint


def test_smollm2_dir_built_once_by_concurrent_processes(tmp_path):
    # The conversion is replaced by a slow fake that logs each run; two processes race to build the folder.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import fluxprm.embedded as e\n"
        "def fake(gguf, out):\n"
        "    with open(sys.argv[1], 'a') as f: f.write('convert\\n')\n"
        "    time.sleep(1.0)\n"
        "    (out / 'config.json').write_text('{}')\n"
        "e._convert_gguf = fake\n"
        "print(e.smollm2_dir())\n"
    )
    log = tmp_path / "conversions.log"
    env = dict(os.environ, FLUXPRM_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(log)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    target = tmp_path / "cache" / "smollm2-135m-instruct"
    assert outs == [str(target)] * 2
    assert log.read_text() == "convert\n"
    assert sorted(p.name for p in target.iterdir()) == [".complete", "config.json"]
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_the_first_build_of_the_embedded_backbone_draws_no_progress_bars(tmp_path):
    """A new user's first `make demo` began with two runs of carriage returns: transformers' GGUF reader draws
    its de-quantisation bar with tqdm directly (past transformers' own switch) and save_pretrained a shard bar."""
    env = dict(os.environ, FLUXPRM_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", "import fluxprm.embedded as e; print(e.smollm2_dir())"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    built = Path(done.stdout.strip())
    assert built.parent == tmp_path / "cache" and (built / "model.safetensors").is_file()
    assert "de-quantizing" not in done.stderr and "Writing model shards" not in done.stderr, done.stderr[-500:]
    assert "it/s]" not in done.stderr, done.stderr[-500:]
    from transformers import modeling_gguf_pytorch_utils as gguf_module
    from fluxprm.quiet import no_loading_bars

    before = gguf_module.tqdm
    with no_loading_bars():
        assert gguf_module.tqdm is not before
    assert gguf_module.tqdm is before  # restored for the caller's own GGUF loads


def test_a_local_judge_retrained_in_place_is_not_served_from_the_cache(tmp_path):
    """The LLM cache keyed a local model by its path: a judge retrained into the same folder answered with the old
    model's cached verdicts. The key now holds what the folder holds (models.identity.folder_fingerprint)."""
    import shutil

    from fluxprm.embedded import smollm2_dir

    judge = tmp_path / "judge"
    judge.mkdir()
    for f in smollm2_dir().iterdir():
        (judge / f.name).symlink_to(f)
    cache = LLMCache(tmp_path / "cache.sqlite")
    prompt, choices = "The capital of France is", [" Paris", " Rome"]
    first = TransformersLLM(str(judge), cache=cache)
    answer = first.choice_logprobs(prompt, choices)
    again = TransformersLLM(str(judge), cache=cache)
    assert again.choice_logprobs(prompt, choices) == answer and again.stats["forwards"] == 0  # same folder: a hit
    (judge / "config.json").unlink()
    shutil.copyfile(smollm2_dir() / "config.json", judge / "config.json")  # "retrained": the folder changed
    retrained = TransformersLLM(str(judge), cache=cache)
    assert retrained.cache_name != first.cache_name and retrained.name == first.name
    retrained.choice_logprobs(prompt, choices)
    assert retrained.stats["forwards"] == 1  # not served from the old model's cache
