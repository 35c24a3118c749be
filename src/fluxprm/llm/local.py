"""The local backend: a causal LM run in-process with transformers (the embedded SmolLM2-135M-Instruct, or
any checkpoint folder).

It is the only module of :mod:`fluxprm.llm` that uses torch and transformers, and it imports them (and
:mod:`fluxprm.device`, which imports torch) inside its functions, so ``import fluxprm.llm`` stays light
for runs that only talk to a server.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

from fluxprm.models.identity import folder_fingerprint

from .base import GenParams, Prompt
from .cache import LLMCache, cache_lookup, cached_map

__all__ = ["TransformersLLM", "smollm2_path"]


def smollm2_path() -> Path:
    """Folder of the embedded SmolLM2-135M-Instruct as a transformers checkpoint (built once, cached)."""
    from fluxprm.embedded import smollm2_dir

    return smollm2_dir()


def _truncate_at_stop(text: str, stop: list[str] | None) -> str:
    """``text`` up to its first stop string: transformers' ``stop_strings`` ends generation but keeps the
    stop string in the output, while OpenAI semantics (which :class:`GenParams` promises) drop it."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


class TransformersLLM:
    """A local causal LM run with transformers.

    Greedy generation (``temperature == 0``) is batched; sampled generation runs prompt by prompt with the
    RNG seeded from ``params.seed`` so each prompt's samples do not depend on what else is in the call (or in
    the cache). Chat-message prompts are rendered with the tokenizer's chat template.

    ``device``/``dtype`` follow :func:`fluxprm.device.resolve_device` / :func:`~fluxprm.device.resolve_dtype`
    with ``cpu_bf16=False``: ``auto`` is bfloat16 (or float16) on a GPU but float32 on every CPU, because
    results are cached by (model, prompt, params) and must not depend on the batch they ran in or on the CPU's
    bf16 support. ``dtype`` applies when loading from a path; a model object is used as given.
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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from fluxprm.device import resolve_device, resolve_dtype
        from fluxprm.quiet import no_loading_bars

        self.device = resolve_device(device)
        if isinstance(model_or_path, (str, os.PathLike)):
            path = str(model_or_path)
            torch_dtype = resolve_dtype(dtype, self.device, cpu_bf16=False)
            with no_loading_bars():
                self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            self.name = name or path
            # cached answers are this folder's as it is now: a judge retrained into the same folder is another model
            self.cache_name = f"{self.name}@{folder_fingerprint(path)}" if os.path.isdir(path) else self.name
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
            self.model, self.tokenizer = model_or_path, tokenizer
            self.name = name or getattr(model_or_path.config, "_name_or_path", "") or type(model_or_path).__name__
            self.cache_name = self.name
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self.stats = {"forwards": 0, "cache_hits": 0}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"TransformersLLM({self.name!r}, device={str(self.device)!r})"

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
                return cached_map(prompts, params, self._sample_one, cache=self.cache, model=self.cache_name,
                                  count_hits=lambda k: self._count("cache_hits", k))
            return self._generate_greedy(prompts, params)

    def _generate_greedy(self, prompts: list[Prompt], params: GenParams) -> list[list[str]]:
        results, missing = cache_lookup(self.cache, self.cache_name, prompts, params)
        self._count("cache_hits", len(prompts) - len(missing))
        todo = [(i, key, self._ids(prompts[i])) for i, key in missing]
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

        key = (LLMCache.key(self.cache_name, prompt, {"choice_logprobs": list(choices)}) if self.cache is not None
               else None)
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
