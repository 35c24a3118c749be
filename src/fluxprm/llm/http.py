"""The HTTP backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, OpenAI).

Remote servers fail in ways a local model does not (rate limits, 5xx, stalls, servers that ignore ``n``),
so everything that copes with that - retries with backoff, per-request timeouts, concurrency, the ``n``
fallback, reading ``top_logprobs`` - lives here, apart from the local backend and without torch.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from typing import Any

from .base import GenParams, LLMError, Prompt
from .cache import LLMCache, cached_map

__all__ = ["OpenAICompatLLM", "only_served_model"]

logger = logging.getLogger(__name__)


def _api_key(api_key: str | None) -> str:
    """The key given, else ``$FLUXPRM_LLM_API_KEY``, else ``$OPENAI_API_KEY``; local servers take any key."""
    return api_key or os.environ.get("FLUXPRM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


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
        self.client = openai.OpenAI(base_url=self.base_url, api_key=_api_key(api_key), max_retries=0, timeout=timeout)
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

    def ping(self, timeout: float = 5.0) -> str | None:
        """``None`` if the server answers ``GET /models``, else how it failed (for a start-up check)."""
        import openai

        try:
            client = openai.OpenAI(base_url=self.base_url, api_key=self.client.api_key, max_retries=0, timeout=timeout)
            client.models.list()
        except openai.APIStatusError as e:
            return f"{self.base_url}/models answered HTTP {e.status_code}"
        except Exception as e:  # noqa: BLE001 - any transport failure is reported the same way
            cause = e.__cause__ or e
            return f"cannot reach {self.base_url or 'api.openai.com'} ({type(cause).__name__}: {cause})"
        return None

    def generate(self, prompts: list[Prompt], params: GenParams | None = None) -> list[list[str]]:
        params = params or GenParams()
        return cached_map(prompts, params, self._generate_one, cache=self.cache, model=self.name,
                          workers=self.concurrency, count_hits=lambda k: self._count("cache_hits", k))

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


def only_served_model(base_url: str, api_key: str | None = None) -> str:
    """The id of the one model ``base_url`` serves, so that ``load_llm("http://host:port/v1")`` needs no
    ``#model``; a ``ValueError`` naming the choices when the server serves several (or listing fails)."""
    import openai

    try:
        client = openai.OpenAI(base_url=base_url, api_key=_api_key(api_key), max_retries=2, timeout=30)
        models = [m.id for m in client.models.list()]
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"no model in {base_url!r} and listing the server's models failed: {e}; "
                         f"write '{base_url}#MODEL'") from e
    if len(models) != 1:
        raise ValueError(f"{base_url} serves {models}; pick one with '{base_url}#MODEL'")
    return models[0]
