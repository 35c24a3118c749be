"""``ServeOptions``: every knob of ``fluxprm serve`` that is not a model or scoring option, declared once.

The command line is generated from this dataclass (:mod:`fluxprm.cli.options`); scoring knobs (segmentation,
``--long``, ``--batch-tokens``, ``--batching``, ``--spans``) are :class:`~fluxprm.engine.options.ScoreOptions`
fields, shared with ``fluxprm score`` so the server scores exactly as the offline command does. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["ServeOptions", "LOG_LEVELS", "DEFAULT_STEP_TAG"]

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_STEP_TAG = "<extra_0>"  # the separator Qwen2.5-Math-PRM clients put after every step


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens, who may call it, how requests are coalesced, and the limits that protect it."""

    host: str = field(default="127.0.0.1", metadata={
        "help": "Address to bind. The default accepts loopback clients only; use 0.0.0.0 (with --api-key) to "
                "serve other machines."})
    port: int = field(default=8000, metadata={"help": "Port to bind; 0 picks a free one (printed at start).",
                                              "min": 0})
    api_key: str | None = field(default=None, metadata={
        "help": "Require this key on every request except GET /health, as 'Authorization: Bearer KEY' or "
                "'x-api-key: KEY' (401 otherwise). Also read from $FLUXPRM_API_KEY.  [default: no key]"})
    served_model_name: str | None = field(default=None, metadata={
        "help": "Model name in /v1/models and accepted in the 'model' field of requests (the registry name and "
                "hub id are accepted too).  [default: the model's name]"})
    dynamic_batching: bool = field(default=True, metadata={
        "help": "Coalesce requests from many clients into one scoring call (up to --max-batch-tokens, waiting "
                "at most --max-wait-ms); --no-dynamic-batching scores one request per call."})
    max_batch_tokens: int = field(default=16384, metadata={
        "help": "Tokens (estimated as characters/4) coalesced into one scoring call; a larger request runs "
                "alone.", "min": 1})
    max_wait_ms: float = field(default=5.0, metadata={
        "help": "How long an idle model waits for more requests before scoring a batch that is not full.",
        "min": 0})
    max_queue: int = field(default=16384, metadata={
        "help": "Traces waiting to be scored; a request that would exceed it gets 503 with Retry-After.",
        "min": 1})
    max_request_traces: int = field(default=4096, metadata={
        "help": "Traces (or /pooling inputs, or /get_reward queries) in one request; more is 413 (an RL trainer "
                "sends a whole rollout batch at once: 128 prompts × 8 samples = 1,024).", "min": 1})
    max_body_mb: float = field(default=256.0, metadata={
        "help": "Request body limit in MiB; a larger body is 413.", "min": 0.001})
    beta: float = field(default=0.75, metadata={
        "help": "/get_reward mix: reward = (1 - beta) * outcome + beta * prm, outcome graded against 'labels' "
                "(the ReasonFlux-PRM GRPO recipe)."})
    grade_timeout: float = field(default=5.0, metadata={
        "help": "Seconds allowed to grade one /get_reward answer against its label (a hung grader counts 0).",
        "min": 0.1})
    step_tag: str | None = field(default=None, metadata={
        "help": "Step tag that /pooling inputs put after every step (one reward pair per tag).  [default: the "
                "model's own tag: 'ки' for math-shepherd, else '<extra_0>']", "escapes": True})
    shutdown_timeout: float | None = field(default=None, metadata={
        "help": "On SIGTERM/Ctrl-C, seconds to let accepted requests finish before they are dropped.  "
                "[default: no limit; a second Ctrl-C forces]"})
    access_log: bool = field(default=False, metadata={"help": "Log every request (one line each)."})
    log_level: str = field(default="info", metadata={"help": "Server log level.", "choices": LOG_LEVELS})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty: give a key, or leave the option out to serve without one")
        if self.step_tag is not None and not self.step_tag:
            raise ValueError("step_tag is empty")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for name in ("max_batch_tokens", "max_queue", "max_request_traces"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "max_body_mb", "grade_timeout", "shutdown_timeout"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.max_body_mb <= 0 or self.grade_timeout <= 0:
            raise ValueError("max_wait_ms must be >= 0, max_body_mb and grade_timeout > 0")
        if self.shutdown_timeout is not None and self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0, got {self.shutdown_timeout}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
