"""Text generation backends behind one small interface, with an on-disk cache.

One module per job:

* :mod:`.base` - what a prompt is, :class:`GenParams`, the :class:`LLM` protocol, :class:`LLMError`;
* :mod:`.cache` - :class:`LLMCache`, a SQLite file keyed by sha256(model, prompt, params) that every call
  goes through, so a rerun costs nothing;
* :mod:`.http` - :class:`OpenAICompatLLM` for any OpenAI-compatible server (vLLM, SGLang, llama.cpp's
  server, OpenAI): concurrent requests, retries with exponential backoff and jitter, per-request timeouts;
* :mod:`.local` - :class:`TransformersLLM`, generation with transformers (batched greedy, or sampled with a
  seed) and next-token log-probs of fixed choices (used by the quality judge to read a 0-10 score without
  sampling). The only module that uses torch, and only inside its functions.

This file only picks a backend from a spec: ``load_llm("http://host:port/v1#model" | "openai:model" |
"smollm2" | folder)``. Submodules import each other, never this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import LLM, GenParams, LLMError, Prompt
from .cache import LLMCache, default_cache_path
from .http import OpenAICompatLLM, only_served_model
from .local import TransformersLLM, smollm2_path

__all__ = [
    "GenParams", "LLM", "LLMCache", "LLMError", "OpenAICompatLLM", "Prompt", "TransformersLLM", "load_llm",
    "default_cache_path", "smollm2_path",
]

_SMOLLM2_NAMES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}


def _make_cache(cache: LLMCache | str | os.PathLike | bool | None) -> LLMCache | None:
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
            model = only_served_model(base_url, kw.get("api_key"))
        return OpenAICompatLLM(model, base_url=base_url, cache=cache_obj, **kw)
    if spec.startswith("openai:"):
        return OpenAICompatLLM(spec[len("openai:") :], cache=cache_obj, **kw)
    if spec.lower() in _SMOLLM2_NAMES:
        return TransformersLLM(smollm2_path(), cache=cache_obj, name="smollm2-135m-instruct", **kw)
    path = Path(spec).expanduser()
    if path.is_dir():
        return TransformersLLM(path, cache=cache_obj, name=kw.pop("name", str(path.resolve())), **kw)
    if "/" not in spec or spec.startswith((".", "/", "~")):
        raise ValueError(f"cannot load LLM {spec!r}: not a server URL ('http://host:port/v1#model'), 'openai:MODEL', "
                         "'smollm2', an existing local checkpoint folder or a hub id ('org/name')")
    try:
        return TransformersLLM(spec, cache=cache_obj, **kw)
    except Exception as e:
        raise ValueError(
            f"cannot load LLM {spec!r}: not a server URL ('http://host:port/v1#model'), 'openai:MODEL', "
            f"'smollm2' or a local checkpoint folder, and loading it as a hub id failed ({e})"
        ) from e
