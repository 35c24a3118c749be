"""Text generation backends behind one small interface, with an on-disk cache.

* :class:`OpenAICompatLLM` talks to any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, OpenAI):
  concurrent requests, retries with exponential backoff and jitter, per-request timeouts.
* :class:`TransformersLLM` generates locally with transformers (batched greedy, or sampled with a seed), and
  reads next-token log-probs of fixed choices (:meth:`TransformersLLM.choice_logprobs`, used by the quality
  judge to read a 0-10 score without sampling).
* :class:`LLMCache` is a SQLite file keyed by sha256(model, prompt, params): every call goes through it, so a
  rerun costs nothing.

``load_llm("http://host:port/v1#model" | "openai:model" | "smollm2" | folder)`` picks the backend.
A prompt is either raw text (completion endpoint / no chat template) or a list of chat messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

__all__ = [
    "GenParams", "LLM", "LLMCache", "LLMError", "OpenAICompatLLM", "TransformersLLM", "load_llm",
    "default_cache_path", "smollm2_path",
]

logger = logging.getLogger(__name__)

Prompt = Union[str, list[dict]]


class LLMError(RuntimeError):
    """A generation request failed for good (after retries, or with a non-retryable error)."""


@dataclass
class GenParams:
    """Sampling parameters, OpenAI semantics. ``temperature=0`` is greedy; ``n`` completions per prompt;
    ``stop`` strings end a completion (not included in it). ``logprobs`` is passed to servers that take it;
    :meth:`generate` returns texts only - read scores with ``choice_logprobs``."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(self, prompts: list[Prompt], params: GenParams) -> list[list[str]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ...


# ------------------------------------------------------------------------------------------------- the cache


def default_cache_path() -> Path:
    from fluxprm.embedded import cache_dir

    return cache_dir() / "llm-cache.sqlite"


class LLMCache:
    """A SQLite file of generations. Thread-safe, usable by several processes at once, and WAL-journaled, so
    everything stored before a ``kill -9`` is still there afterwards.

    ``hits``/``misses`` count lookups made through this object.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a fresh connection after fork
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS generations ("
                "key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @staticmethod
    def key(model: str, prompt: Any, params: GenParams | dict) -> str:
        p = asdict(params) if isinstance(params, GenParams) else params
        blob = json.dumps([model, prompt, p], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._connect().execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, model: str, value: Any) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO generations (key, model, value, created) VALUES (?, ?, ?, ?)",
                (key, model, blob, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"LLMCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"


def _truncate_at_stop(text: str, stop: list[str] | None) -> str:
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


# ---------------------------------------------------------------------------------------- OpenAI-compatible


class OpenAICompatLLM:
    """A model behind an OpenAI-compatible HTTP API.

    Chat-message prompts go to ``/chat/completions``, raw text to ``/completions``. Up to ``concurrency``
    requests run at once; 429, 5xx, connection errors and timeouts are retried ``max_retries`` times with
    exponential backoff and jitter (honouring ``Retry-After``). ``n > 1`` is one request with ``n`` where the
    server supports it; servers that ignore ``n`` (llama.cpp) are detected and get ``n`` requests with seeds
    ``seed, seed+1, ...`` instead.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 120.0,
        cache: LLMCache | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        import openai

        self.name = model
        self.base_url = base_url or os.environ.get("FLUXPRM_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        api_key = api_key or os.environ.get("FLUXPRM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self.concurrency = max(1, concurrency)
        self.max_retries = max(0, max_retries)
        self.timeout = timeout
        self.cache = cache
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.n_supported: bool | None = None  # learnt from the first n > 1 request
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "failures": 0}
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatLLM({self.name!r}, base_url={self.base_url!r})"

    def _count(self, key: str, k: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += k

    # -- public

    def generate(self, prompts: list[Prompt], params: GenParams | None = None) -> list[list[str]]:
        params = params or GenParams()
        return _cached_map(self, prompts, params, self._generate_one, self.concurrency)

    def choice_logprobs(self, prompt: Prompt, choices: list[str], top_logprobs: int = 20) -> dict[str, float]:
        """Log-prob of each choice as the first generated token, from the server's ``top_logprobs`` (at most
        20 on OpenAI). A choice that is not among them, or that is longer than one token, gets ``-inf``:
        prefer single-token choices with this backend."""
        key_params = {"choice_logprobs": list(choices), "top_logprobs": top_logprobs}
        key = LLMCache.key(self.name, prompt, key_params) if self.cache else None
        if key and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            return hit
        extra: dict[str, Any]
        if isinstance(prompt, str):
            extra = {"logprobs": top_logprobs}
        else:
            extra = {"logprobs": True, "top_logprobs": top_logprobs}
        response = self._call(prompt, GenParams(max_tokens=1, temperature=0.0), n=1, seed=0, extra=extra)
        top = _first_top_logprobs(response)
        out: dict[str, float] = {}
        for c in choices:
            vals = [lp for tok, lp in top.items() if tok.strip() == c.strip()]
            out[c] = max(vals) if vals else -math.inf
        if key:
            self.cache.put(key, self.name, out)
        return out

    # -- internals

    def _generate_one(self, prompt: Prompt, params: GenParams) -> list[str]:
        if params.n == 1:
            return self._texts(self._call(prompt, params, n=1, seed=params.seed))
        base = params.seed if params.seed is not None else random.randrange(2**31)
        texts: list[str] = []
        if self.n_supported is not False:
            texts = self._texts(self._call(prompt, params, n=params.n, seed=base))
            if len(texts) >= params.n:
                self.n_supported = True
                return texts[: params.n]
            if self.n_supported is None:
                logger.info("%s ignores n=%d (returned %d); sending one request per sample", self, params.n, len(texts))
            self.n_supported = False
        for i in range(len(texts), params.n):
            texts += self._texts(self._call(prompt, params, n=1, seed=base + i))[:1]
        return texts

    @staticmethod
    def _texts(response: Any) -> list[str]:
        choices = sorted(response.choices, key=lambda c: c.index or 0)
        if hasattr(choices[0] if choices else None, "message"):
            return [c.message.content or "" for c in choices]
        return [c.text or "" for c in choices]

    def _call(self, prompt: Prompt, params: GenParams, n: int, seed: int | None, extra: dict | None = None) -> Any:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.name,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        if params.stop:
            kwargs["stop"] = params.stop
        if params.logprobs is not None and not extra:
            if isinstance(prompt, str):
                kwargs["logprobs"] = params.logprobs
            else:
                kwargs.update(logprobs=True, top_logprobs=params.logprobs)
        kwargs.update(extra or {})
        if isinstance(prompt, str):
            create, kwargs["prompt"] = self.client.completions.create, prompt
        else:
            create, kwargs["messages"] = self.client.chat.completions.create, prompt

        for attempt in range(self.max_retries + 1):
            self._count("requests")
            try:
                return create(**kwargs)
            except (openai.APIConnectionError, openai.APIStatusError) as e:  # APITimeoutError is a connection error
                status = getattr(e, "status_code", None)
                retryable = status is None or status in (408, 409, 429) or status >= 500
                if not retryable or attempt == self.max_retries:
                    self._count("failures")
                    what = f"HTTP {status}" if status else type(e).__name__
                    hint = " (is the server up? check the base URL)" if status is None else ""
                    raise LLMError(
                        f"{self.name} at {self.base_url or 'api.openai.com'}: {what} after {attempt + 1} "
                        f"attempt(s){hint}: {e}"
                    ) from e
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                retry_after = _retry_after(e)
                if retry_after is not None:
                    delay = min(self.max_backoff, max(delay, retry_after))
                self._count("retries")
                logger.debug("%s: %s, retry %d in %.2f s", self, status or type(e).__name__, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(e: Exception) -> float | None:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _first_top_logprobs(response: Any) -> dict[str, float]:
    choice = response.choices[0]
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        raise LLMError("the server returned no logprobs; it may not support them")
    if getattr(lp, "content", None):  # chat format
        first = lp.content[0]
        return {t.token: t.logprob for t in (first.top_logprobs or [])} or {first.token: first.logprob}
    if getattr(lp, "top_logprobs", None):  # completions format
        return dict(lp.top_logprobs[0])
    raise LLMError("the server returned empty logprobs")


def _cached_map(llm: Any, prompts: list[Prompt], params: GenParams, fn: Any, workers: int) -> list[list[str]]:
    """Run ``fn(prompt, params)`` for prompts missing from ``llm.cache`` (in ``workers`` threads), store
    each result as soon as it arrives, and return all results in prompt order."""
    results: list[list[str] | None] = [None] * len(prompts)
    todo: list[tuple[int, str | None]] = []
    cache = llm.cache
    for i, prompt in enumerate(prompts):
        key = LLMCache.key(llm.name, prompt, params) if cache is not None else None
        if key is not None and (hit := cache.get(key)) is not None:
            results[i] = hit
            llm._count("cache_hits")
        else:
            todo.append((i, key))

    def run(i: int, key: str | None) -> None:
        out = fn(prompts[i], params)
        results[i] = out
        if key is not None:
            cache.put(key, llm.name, out)

    if len(todo) == 1 or workers == 1:
        for i, key in todo:
            run(i, key)
    elif todo:
        with ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix="fluxprm-llm") as ex:
            futures = [ex.submit(run, i, key) for i, key in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise f.exception()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- transformers


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        if str(device).startswith("cuda") and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


class TransformersLLM:
    """A local causal LM run with transformers.

    Greedy generation (``temperature == 0``) is batched; sampled generation runs prompt by prompt with the
    RNG seeded from ``params.seed`` so each prompt's samples do not depend on what else is in the call (or in
    the cache). Chat-message prompts are rendered with the tokenizer's chat template.
    """

    def __init__(
        self,
        model_or_path: Any,
        tokenizer: Any = None,
        device: str = "cpu",
        dtype: Any = "auto",
        cache: LLMCache | None = None,
        batch_size: int = 8,
        name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if isinstance(model_or_path, (str, os.PathLike)):
            path = str(model_or_path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=_resolve_dtype(dtype, device))
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            self.name = name or path
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
            self.model, self.tokenizer = model_or_path, tokenizer
            self.name = name or getattr(model_or_path.config, "_name_or_path", "") or type(model_or_path).__name__
        self.model.to(device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self.stats = {"forwards": 0, "cache_hits": 0}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"TransformersLLM({self.name!r}, device={self.device!r})"

    def _count(self, key: str, k: int = 1) -> None:
        self.stats[key] += k

    def _ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt).input_ids)
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, prompts: list[Prompt], params: GenParams | None = None) -> list[list[str]]:
        params = params or GenParams()
        with self._lock:
            if params.temperature > 0:
                return _cached_map(self, prompts, params, self._sample_one, 1)
            return self._generate_greedy(prompts, params)

    def _generate_greedy(self, prompts: list[Prompt], params: GenParams) -> list[list[str]]:
        results: list[list[str] | None] = [None] * len(prompts)
        todo = []
        for i, prompt in enumerate(prompts):
            key = LLMCache.key(self.name, prompt, params) if self.cache is not None else None
            if key is not None and (hit := self.cache.get(key)) is not None:
                results[i] = hit
                self._count("cache_hits")
            else:
                todo.append((i, key, self._ids(prompt)))
        todo.sort(key=lambda t: len(t[2]))  # similar lengths together: less padding
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            texts = self._run([ids for _, _, ids in chunk], params, num_return=1)
            for (i, key, _), text in zip(chunk, texts):
                results[i] = [text] * params.n  # greedy: the n completions are identical
                if key is not None:
                    self.cache.put(key, self.name, results[i])
        return results  # type: ignore[return-value]

    def _sample_one(self, prompt: Prompt, params: GenParams) -> list[str]:
        import torch

        with torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            return self._run([self._ids(prompt)], params, num_return=params.n)

    def _run(self, batch: list[list[int]], params: GenParams, num_return: int) -> list[str]:
        import torch
        from transformers import GenerationConfig

        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=0 if sample else None,
            num_return_sequences=num_return,
            pad_token_id=pad,
            eos_token_id=self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id,
            stop_strings=params.stop or None,
        )
        extra = {"tokenizer": self.tokenizer} if params.stop else {}
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config, **extra)
        self._count("forwards")
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [_truncate_at_stop(t, params.stop) for t in texts]

    def choice_logprobs(self, prompt: Prompt, choices: list[str]) -> dict[str, float]:
        """Log-probability of each choice as the continuation of the (chat-templated) prompt, summed over the
        choice's tokens. One forward of the prompt scores every single-token choice; multi-token choices
        (e.g. ``"10"`` when digits are split) add one batched forward. No sampling."""
        import torch

        key = LLMCache.key(self.name, prompt, {"choice_logprobs": list(choices)}) if self.cache is not None else None
        if key is not None and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            return hit
        prompt_ids = self._ids(prompt)
        choice_ids = {c: list(self.tokenizer(c, add_special_tokens=False).input_ids) for c in choices}
        out: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            ids = torch.tensor([prompt_ids], device=self.device)
            first = torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)
            self._count("forwards")
            longer = [c for c, t in choice_ids.items() if len(t) > 1]
            for c, t in choice_ids.items():
                out[c] = float(first[t[0]]) if len(t) == 1 else -math.inf
            if longer:
                seqs = [prompt_ids + choice_ids[c][:-1] for c in longer]
                width = max(map(len, seqs))
                pad = self.tokenizer.pad_token_id
                x = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
                m = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
                logp = torch.log_softmax(self.model(input_ids=x, attention_mask=m).logits.float(), dim=-1)
                self._count("forwards")
                n = len(prompt_ids)
                for row, c in enumerate(longer):
                    toks = choice_ids[c]
                    # token j of the choice is predicted at position n - 1 + j
                    out[c] = float(sum(logp[row, n - 1 + j, tok] for j, tok in enumerate(toks)))
        if key is not None:
            self.cache.put(key, self.name, out)
        return out


# ------------------------------------------------------------------------------------------------ load_llm


def smollm2_path() -> Path:
    """Folder of the embedded SmolLM2-135M-Instruct as a transformers checkpoint (built once, cached)."""
    from fluxprm.embedded import smollm2_dir

    return smollm2_dir()


_SMOLLM2_NAMES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}


def _make_cache(cache: Any) -> LLMCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return LLMCache(default_cache_path())
    if isinstance(cache, LLMCache):
        return cache
    return LLMCache(cache)


def load_llm(spec: str, cache: LLMCache | str | os.PathLike | bool | None = True, **kw: Any) -> LLM:
    """An LLM from a short spec:

    * ``"http://host:port/v1#model"`` - an OpenAI-compatible server (``#model`` may be left out when the
      server serves exactly one model);
    * ``"openai:model"`` - base URL and key from ``FLUXPRM_LLM_BASE_URL``/``OPENAI_BASE_URL`` and
      ``FLUXPRM_LLM_API_KEY``/``OPENAI_API_KEY``;
    * ``"smollm2"`` - the embedded SmolLM2-135M-Instruct, run locally;
    * a local checkpoint folder (or, where the hub is reachable, a hub id) - run locally with transformers.

    ``cache``: ``True`` (default) uses ``~/.cache/fluxprm/llm-cache.sqlite`` (``$FLUXPRM_CACHE``), a path uses
    that file, ``False``/``None`` turns caching off. Other keyword arguments go to the backend's constructor.
    """
    cache_obj = _make_cache(cache)
    if spec.startswith(("http://", "https://")):
        base_url, _, model = spec.partition("#")
        if not model:
            model = _only_served_model(base_url, kw.get("api_key"))
        return OpenAICompatLLM(model, base_url=base_url, cache=cache_obj, **kw)
    if spec.startswith("openai:"):
        return OpenAICompatLLM(spec[len("openai:") :], cache=cache_obj, **kw)
    if spec.lower() in _SMOLLM2_NAMES:
        return TransformersLLM(smollm2_path(), cache=cache_obj, name="smollm2-135m-instruct", **kw)
    path = Path(spec).expanduser()
    if path.is_dir():
        return TransformersLLM(path, cache=cache_obj, name=kw.pop("name", str(path.resolve())), **kw)
    try:
        return TransformersLLM(spec, cache=cache_obj, **kw)
    except Exception as e:
        raise ValueError(
            f"cannot load LLM {spec!r}: not a server URL ('http://host:port/v1#model'), 'openai:MODEL', "
            f"'smollm2' or a local checkpoint folder, and loading it as a hub id failed ({e})"
        ) from e


def _only_served_model(base_url: str, api_key: str | None) -> str:
    import openai

    key = api_key or os.environ.get("FLUXPRM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    try:
        models = [m.id for m in openai.OpenAI(base_url=base_url, api_key=key, max_retries=2, timeout=30).models.list()]
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"no model in {base_url!r} and listing the server's models failed: {e}; "
                         f"write '{base_url}#MODEL'") from e
    if len(models) != 1:
        raise ValueError(f"{base_url} serves {models}; pick one with '{base_url}#MODEL'")
    return models[0]
