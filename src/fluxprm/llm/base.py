"""The contract every text generation backend shares: what a prompt is, the sampling parameters, the
:class:`LLM` protocol and the one error type.

It lives apart from the backends so that the cache, the HTTP client and the local model can all depend on
it without depending on each other, and so that code which only builds prompts and parameters (the label
stages) needs neither torch nor an HTTP client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

__all__ = ["GenParams", "LLM", "LLMError", "Prompt"]

Prompt = Union[str, list[dict]]
"""Raw text (completion endpoint / no chat template) or a list of chat messages."""


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
    """What the label stages need from a backend: a name (part of every cache key) and ``generate``."""

    name: str

    def generate(self, prompts: list[Prompt], params: GenParams) -> list[list[str]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ...
