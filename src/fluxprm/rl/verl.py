"""fluxprm rewards inside verl (tested against verl 0.9.1): a custom reward function and dense reward managers.

Three ways in, from the simplest (details and copy-paste configs: ``docs/rl.md``, section "verl"):

* :func:`compute_score` — verl's ``custom_reward_function`` (``reward.custom_reward_function.path:
  pkg://fluxprm.rl.verl``, ``name: compute_score``). The PRM runs in each Reward Loop worker process. Returns
  ``{"score", "prm", "acc"}``: verl puts ``score`` on the last response token and logs all three.
* :func:`compute_score_async` — the same reward computed by a running ``fluxprm serve`` over HTTP
  (``POST /get_reward``, OpenRLHF's remote-RM protocol), for a PRM too big for the reward workers' CPUs. verl's
  Reward Loop awaits an ``async def`` reward function.
* :class:`FluxPRMRewardManager` — a Reward Loop reward manager (registered as ``"fluxprm"`` in
  ``verl.experimental.reward_loop.reward_manager``; legacy :class:`FluxPRMLegacyRewardManager`, same name, in
  ``verl.workers.reward_manager``) that writes **dense** rewards: every step's share of the reward on the response
  token that closes the step, the outcome term on the last token (the split is :mod:`fluxprm.rl.rewards`'s; the
  row sums to the scalar reward under mean aggregation). ``dense: false`` puts the scalar on the last token.

Where verl places what a manager returns (verl 0.9.1 source):

* ``RewardLoopManager.compute_rm_score`` calls the manager class's ``assemble_rm_scores(data, scores)``: this
  module's writes the dense row there. verl takes that path only with a *colocated reward model*
  (``reward.reward_model.enable=true``, ``enable_resource_pool=false``), which launches a vLLM/SGLang server.
* Otherwise rewards stream with the rollout: the agent loop puts ``reward_score`` (a float) on the last token
  itself. The dense placement still travels, as the JSON string ``fluxprm_token_rewards`` in
  ``reward_extra_info``: ``FluxPRMDenseAgentLoop`` (an agent loop wrapping the one you use; the V1 trainer, verl
  0.9.1's default) makes ``AgentLoopOutput.as_dict`` write the dense row, and ``FluxPRMAgentLoopManager``
  (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``, the V0 trainer) rewrites ``rm_scores`` from it
  after generation. Both are built on first access: verl's agent loop imports a rollout stack (and ``cachetools``)
  that the reward managers do not need.

Why the less obvious choices:

* ``reward_score`` is a :class:`DenseScore`: a ``float`` (so every verl path that expects a number works) that
  carries its token placement to ``assemble_rm_scores``, the only thing ``compute_rm_score`` passes there.
* verl loads ``path`` files with ``spec_from_file_location`` under a fresh module name, once for the reward
  function and again for the manager. Executed that way this file hands out the objects of the package module
  ``fluxprm.rl.verl`` instead of defining its own, so the registries see one class (verl's ``register`` refuses a
  second class under the same name) and a pickled :class:`DenseScore` unpickles in any process.
* Concurrent ``run_single`` calls (the Reward Loop worker starts one task per sample of its chunk) are gathered
  and scored in one call: the engine then batches them as it measured fastest (padded batches on a GPU; on a
  2-core CPU with fluxprm-mini, 16 samples took the same 2 s either way), and the worker's event loop waits on one
  thread instead of one per sample.
* Nothing raises on a completion: a sample the PRM cannot score gets PRM part 0 (and is counted in
  ``fluxprm_unscored``); a batch that fails is retried sample by sample. A model that cannot be loaded raises when
  the manager is built: training on a silently missing reward is worse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

if __name__ != "fluxprm.rl.verl":  # executed from its file path by verl (see the module docstring)
    import importlib

    _CANONICAL = importlib.import_module("fluxprm.rl.verl")
    # verl does not put the module it execs in sys.modules, where dataclasses look up their module's names: the
    # definitions below run against the package module's names, then are replaced by its objects (end of file)
    sys.modules.setdefault(__name__, _CANONICAL)

try:
    import torch
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager import register as _register_reward_loop
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.workers.reward_manager import register as _register_legacy
    from verl.workers.reward_manager.abstract import AbstractRewardManager
except ImportError as _exc:  # pragma: no cover - exercised only without verl
    raise ImportError(
        f"fluxprm.rl.verl needs verl (tested with 0.9.1): pip install 'fluxprm[rl]' or pip install verl "
        f"({type(_exc).__name__}: {_exc})"
    ) from _exc

from fluxprm.records import json_text
from fluxprm.rl.rewards import (
    DEFAULT_BETA,
    DenseReward,
    RewardModel,
    mix,
    outcome_reward,
    prm_reward,
    prompt_text,
    shared_model,
)

__all__ = [
    "compute_score",
    "compute_score_async",
    "DenseScore",
    "FluxPRMRewardManager",
    "FluxPRMLegacyRewardManager",
    "FluxPRMAgentLoopManager",
    "FluxPRMAgentLoopOutput",
    "FluxPRMDenseAgentLoop",
    "TOKEN_REWARDS_KEY",
    "REGISTERED_NAME",
    "problem_from",
    "encode_placement",
    "decode_placement",
    "apply_token_rewards",
    "ServeError",
]

logger = logging.getLogger(__name__)

REGISTERED_NAME = "fluxprm"
TOKEN_REWARDS_KEY = "fluxprm_token_rewards"  # reward_extra_info key carrying the dense placement (a JSON string)
_PROBLEM_KEYS = ("question", "problem", "prompt", "query", "instruction")  # extra_info keys verl's preprocessors use


# ----------------------------------------------------------------------------------------- the problem text

def problem_from(extra_info: Mapping[str, Any] | None, raw_prompt: Any = None, decoded_prompt: str = "") -> str:
    """The problem the PRM sees: ``extra_info["question"]`` (gsm8k's preprocessor) or another problem key, else
    the last user turn of ``raw_prompt`` (the chat messages verl's dataset keeps), else the decoded prompt.

    The raw question comes first because verl's prompts append an instruction ("Let's think step by step and
    output the final answer after ####") that is not part of the problem a PRM was trained on.
    """
    if isinstance(extra_info, Mapping):
        for key in _PROBLEM_KEYS:
            value = extra_info.get(key)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, (list, tuple)) and value:
                text = prompt_text(list(value))
                if text.strip():
                    return text
    if raw_prompt is not None:
        messages = raw_prompt.tolist() if hasattr(raw_prompt, "tolist") else raw_prompt
        text = prompt_text(list(messages) if isinstance(messages, (list, tuple)) else messages)
        if text.strip():
            return text
    return decoded_prompt or ""


_warned_no_problem = False


def _sample_problem(extra_info: Any) -> str:
    """:func:`problem_from` for the ``compute_score`` functions, which see no prompt: with no problem key in
    ``extra_info`` the PRM rejects every sample (an empty problem) and its part is 0 — said once, in the log."""
    global _warned_no_problem
    problem = problem_from(extra_info if isinstance(extra_info, Mapping) else None)
    if not problem and not _warned_no_problem:
        _warned_no_problem = True
        logger.warning("fluxprm compute_score: extra_info holds no problem text (keys %s), so the PRM part of every "
                       "sample is 0; add the question to extra_info in the data preprocessor, or use the fluxprm "
                       "reward manager, which reads the prompt", ", ".join(_PROBLEM_KEYS))
    return problem


# ----------------------------------------------------------------------------------------- custom_reward_function

def _gold(ground_truth: Any) -> Any:
    """verl's ``reward_model.ground_truth``: a string, a number, or (some datasets) a list of accepted answers."""
    if hasattr(ground_truth, "tolist"):
        ground_truth = ground_truth.tolist()
    if isinstance(ground_truth, (list, tuple)):
        return str(ground_truth[0]) if ground_truth else None
    return None if ground_truth is None else str(ground_truth)


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
                  *, model: Any = None, beta: float = DEFAULT_BETA, device: str = "auto", timeout: float = 5.0,
                  **kwargs: Any) -> dict[str, float]:
    """fluxprm's reward for one verl sample: ``{"score": (1 − β)·acc + β·prm, "prm": ..., "acc": ...}``.

    verl calls ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` and merges
    ``custom_reward_function.reward_kwargs`` (``model``, ``beta``, ``device``, ``timeout``) into the keywords; other
    keywords verl adds (``reward_router_address``, …) are ignored. The PRM loads once per process. The keys are the
    same on every call (verl stacks them into arrays across the batch); ``acc`` is 0.0 when there is no gold answer.
    """
    prm = 0.0
    if beta > 0:  # a part with weight 0 is not computed (β = 0 never loads the PRM)
        rm = shared_model(model, device=device)
        _, results = rm.score([_sample_problem(extra_info)], [solution_str])
        prm = prm_reward(results[0], rm.alpha)
    gold = _gold(ground_truth)
    acc = outcome_reward(solution_str, gold, timeout) if beta < 1 else None
    return {"score": float(mix(prm, acc, beta)), "prm": float(prm), "acc": float(acc or 0.0)}


class ServeError(RuntimeError):
    """``fluxprm serve`` could not be reached or refused the request (the message says which and what to do)."""


def _retry_after(value: str | None, fallback: float) -> float:
    try:
        return max(0.0, min(float(value), 60.0)) if value is not None else fallback
    except ValueError:  # an HTTP date: not worth parsing, back off as usual
        return fallback


async def compute_score_async(data_source: Any, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, *, url: str | None = None,
                              api_key: str | None = None, timeout: float = 120.0, max_retries: int = 8,
                              **kwargs: Any) -> dict[str, float]:
    """:func:`compute_score` computed by a running ``fluxprm serve`` (``POST {url}/get_reward``).

    ``url`` and ``api_key`` come from ``custom_reward_function.reward_kwargs`` or the environment
    (``FLUXPRM_SERVE_URL``, default ``http://127.0.0.1:8000``; ``FLUXPRM_API_KEY``). The request is OpenRLHF's
    remote-RM body ``{"query": [prompt + response], "prompts": [prompt], "labels": [gold]}``; the reward is
    ``rewards[0]``, ``prm`` and ``acc`` come from ``extra_logs`` (``prm_reward``, ``outcome_reward``). A 503 or 429 (the
    server's queue is full) is retried up to ``max_retries`` times, waiting what ``Retry-After`` says or an
    exponential backoff; any other failure raises :class:`ServeError` naming the URL and the status.
    """
    import httpx

    base = (url or os.environ.get("FLUXPRM_SERVE_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = api_key or os.environ.get("FLUXPRM_API_KEY")
    problem = _sample_problem(extra_info)
    gold = _gold(ground_truth)
    solution = "" if solution_str is None else str(solution_str)  # as compute_score: no text scores 0
    # json_text, not httpx's json=: a lone surrogate in a sample is sent as its escape, and only that sample fails
    body = json_text({"query": [problem + solution], "prompts": [problem], "labels": [gold]}).encode("utf-8")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    endpoint = f"{base}/get_reward"
    delay = 0.5
    async with httpx.AsyncClient(timeout=timeout) as client:
        for attempt in range(max_retries + 1):
            try:
                resp = await client.post(endpoint, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise ServeError(f"cannot reach fluxprm serve at {endpoint} ({type(exc).__name__}: {exc}); start it "
                                 f"with `fluxprm serve` or set reward_kwargs.url / FLUXPRM_SERVE_URL") from exc
            if resp.status_code in (429, 503) and attempt < max_retries:
                await asyncio.sleep(_retry_after(resp.headers.get("Retry-After"), delay))
                delay = min(delay * 2, 30.0)
                continue
            if resp.status_code != 200:
                hint = " (wrong or missing API key: reward_kwargs.api_key / FLUXPRM_API_KEY)" \
                    if resp.status_code in (401, 403) else ""
                raise ServeError(f"fluxprm serve at {endpoint} answered HTTP {resp.status_code}{hint}: "
                                 f"{resp.text[:300]}")
            break
    try:
        payload = resp.json()
        reward = float(payload["rewards"][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ServeError(f"fluxprm serve at {endpoint} sent no reward ({exc!r}): {resp.text[:300]}") from exc
    logs = payload.get("extra_logs") or {}
    return {"score": reward, "prm": _first(logs, ("prm_reward", "prm"), math.nan),
            "acc": _first(logs, ("outcome_reward", "acc"), 0.0)}


def _first(logs: Mapping[str, Any], keys: Sequence[str], default: float) -> float:
    for key in keys:
        values = logs.get(key)
        if isinstance(values, (list, tuple)) and values and values[0] is not None:
            return float(values[0])
        if isinstance(values, (int, float)):
            return float(values)
    return default


# ----------------------------------------------------------------------------------------- dense placement

class DenseScore(float):
    """A sample's scalar reward that carries where its parts go: ``placement`` = ``[(token, reward), …]`` over the
    ``length`` valid response tokens. Compares and computes as the float it is."""

    placement: tuple[tuple[int, float], ...]
    length: int

    def __new__(cls, value: float, placement: Sequence[tuple[int, float]] = (), length: int = 0) -> "DenseScore":
        self = super().__new__(cls, value)
        self.placement = tuple((int(t), float(r)) for t, r in placement)
        self.length = int(length)
        return self

    def __reduce__(self):  # Ray pickles it between the reward workers and the driver
        return (DenseScore, (float(self), self.placement, self.length))

    def __repr__(self) -> str:
        return f"DenseScore({float(self)!r}, {len(self.placement)} placed over {self.length} tokens)"


def encode_placement(length: int, placement: Sequence[tuple[int, float]]) -> str:
    """The placement as the compact JSON string that travels in ``reward_extra_info`` (numpy stacks strings fine;
    verl's validation metrics skip them)."""
    return json.dumps({"length": int(length), "rewards": [[int(t), float(r)] for t, r in placement]},
                      separators=(",", ":"))


def decode_placement(value: Any) -> tuple[int, list[tuple[int, float]]] | None:
    """Inverse of :func:`encode_placement`; ``None`` for anything else (a row another manager scored)."""
    if isinstance(value, DenseScore):
        return value.length, list(value.placement)
    if not isinstance(value, (str, bytes)):
        return None
    try:
        doc = json.loads(value)
        return int(doc["length"]), [(int(t), float(r)) for t, r in doc["rewards"]]
    except (ValueError, KeyError, TypeError):
        return None


def _write_row(row: torch.Tensor, valid_length: int, placed: tuple[int, list[tuple[int, float]]] | None,
               scalar: float, warn: bool = True) -> None:
    """Fill one ``rm_scores`` row: the placement when it was made for this many tokens, else verl's default (the
    scalar on the last valid token)."""
    row.zero_()
    if valid_length <= 0:
        return
    if placed is not None and placed[0] == valid_length:
        for token, value in placed[1]:
            if 0 <= token < valid_length:
                row[token] += value
        return
    if placed is not None and warn:
        logger.warning("fluxprm token rewards were placed for %d tokens but the response has %d: scalar on the "
                       "last token instead", placed[0], valid_length)
    row[valid_length - 1] = scalar


def _valid_response_lengths(data: DataProto) -> torch.Tensor:
    prompt_length = data.batch["prompts"].size(1)
    return data.batch["attention_mask"][:, prompt_length:].sum(dim=1)


def apply_token_rewards(data: DataProto, key: str = "rm_scores") -> DataProto:
    """Rewrite ``data.batch[key]`` from the ``fluxprm_token_rewards`` placements in ``data.non_tensor_batch``.

    For verl's streaming path, where the agent loop has already put each sample's scalar on its last token. Rows
    without a placement (another reward, a failed sample) keep what they had. Idempotent.
    """
    placements = data.non_tensor_batch.get(TOKEN_REWARDS_KEY)
    if placements is None or key not in data.batch.keys():
        return data
    scores = data.batch[key]
    lengths = _valid_response_lengths(data)
    for i, value in enumerate(placements):
        placed = decode_placement(value)
        if placed is None:
            continue
        scalar = float(scores[i].sum())
        _write_row(scores[i], int(lengths[i]), placed, scalar)
    return data


# ----------------------------------------------------------------------------------------- one sample, scored

@dataclass(slots=True)
class _Sample:
    problem: str
    response: str
    ids: list[int]
    gold: Any


@dataclass(slots=True)
class _Scored:
    reward: float
    prm: float
    acc: float
    steps: int
    unscored: bool
    placement: list[tuple[int, float]]
    length: int

    def extra_info(self) -> dict[str, Any]:
        """Same keys for every sample: verl stacks each key into one array over the batch."""
        return {"score": self.reward, "prm": self.prm, "acc": self.acc, "fluxprm_steps": self.steps,
                "fluxprm_unscored": float(self.unscored), TOKEN_REWARDS_KEY: encode_placement(self.length,
                                                                                          self.placement)}


def _sample_from_item(item: Any, tokenizer: Any) -> _Sample:
    """What a verl ``DataProtoItem`` holds: left-padded ``prompts``, right-padded ``responses``, ``attention_mask``
    over both; ``reward_model.ground_truth``, ``extra_info``, ``raw_prompt`` in the non-tensor part (each may be
    missing: verl's V1 colocated path sends only ``raw_prompt``)."""
    prompt_ids = item.batch["prompts"]
    response_ids = item.batch["responses"]
    prompt_length = prompt_ids.shape[-1]
    mask = item.batch["attention_mask"]
    valid_prompt = int(mask[:prompt_length].sum())
    valid_response = int(mask[prompt_length:].sum())
    ids = [int(t) for t in response_ids[:valid_response].tolist()]
    response = tokenizer.decode(ids, skip_special_tokens=True)
    non_tensor = item.non_tensor_batch
    reward_model = non_tensor.get("reward_model")
    gold = _gold(reward_model.get("ground_truth")) if isinstance(reward_model, Mapping) else None
    extra_info = non_tensor.get("extra_info")
    problem = problem_from(extra_info, non_tensor.get("raw_prompt"))
    if not problem:  # chat markers kept: the trace parser strips ChatML and other templates
        problem = tokenizer.decode(prompt_ids[prompt_length - valid_prompt:].tolist(), skip_special_tokens=False)
    return _Sample(problem, response, ids, gold)


def _scored(dense: DenseReward, length: int, dense_mode: bool) -> _Scored:
    if dense_mode:
        placement = [(t, r) for t, r in enumerate(dense.token_rewards) if r != 0.0]
    else:
        placement = [(length - 1, dense.reward)] if length > 0 else []
    return _Scored(float(dense.reward), float(dense.prm), float(dense.outcome or 0.0), len(dense.step_rewards),
                   dense.error is not None or not dense.step_rewards, placement, length)


def _score_samples(rm: RewardModel, tokenizer: Any, samples: Sequence[_Sample], beta: float, dense: bool,
                   timeout: float) -> list[_Scored]:
    """Score samples as one PRM batch; a batch that fails is retried one sample at a time, and a sample that still
    fails gets its outcome term alone (PRM part 0) on its last token."""
    def run(batch: Sequence[_Sample]) -> list[_Scored]:
        out = rm.dense([s.problem for s in batch], [s.response for s in batch], tokenizer,
                       [s.gold for s in batch], beta, completion_ids=[s.ids for s in batch], timeout=timeout)
        return [_scored(d, len(s.ids), dense) for d, s in zip(out, batch)]

    if not samples:
        return []
    try:
        return run(samples)
    except Exception as exc:  # noqa: BLE001 - one bad sample must not cost the batch
        if len(samples) == 1:
            logger.warning("fluxprm could not score a sample (%s: %s): PRM part 0", type(exc).__name__, exc)
            s = samples[0]
            acc = outcome_reward(s.response, s.gold, timeout) if beta < 1 else None
            reward = mix(0.0, acc, beta)
            n = len(s.ids)
            return [_Scored(reward, 0.0, float(acc or 0.0), 0, True, [(n - 1, reward)] if n else [], n)]
        logger.warning("fluxprm batch of %d failed (%s: %s): scoring one by one", len(samples),
                       type(exc).__name__, exc)
        return [r for s in samples for r in _score_samples(rm, tokenizer, [s], beta, dense, timeout)]


def _options(source: Any) -> dict[str, Any]:
    """``reward.reward_kwargs`` (the place verl's DAPO manager reads its options from) as a plain dict."""
    if source is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(source, DictConfig):
            return dict(OmegaConf.to_container(source, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        pass
    return dict(source)


_OPTION_NAMES = ("model", "beta", "dense", "device", "timeout")


class _Batcher:
    """Gathers the ``run_single`` calls made in one event-loop turn and scores them as one batch in a thread."""

    def __init__(self, score: Callable[[list[_Sample]], list[_Scored]]) -> None:
        self._score = score
        self._pending: list[tuple[_Sample, asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, sample: _Sample) -> _Scored:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((sample, future))
        if len(self._pending) == 1:  # runs after the tasks already scheduled in this turn have queued theirs
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        task = loop.create_task(self._run(loop, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[_Sample, asyncio.Future]]) -> None:
        try:
            results = await loop.run_in_executor(None, self._score, [s for s, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


# ----------------------------------------------------------------------------------------- Reward Loop manager

class FluxPRMRewardManager(RewardManagerBase):
    """verl Reward Loop manager: fluxprm's reward per sample, placed on the response tokens (dense by default).

    Options come from ``reward.reward_kwargs`` (``model``: name or path, default fluxprm-mini; ``beta``: default
    0.75; ``dense``: default true; ``device``: default auto; ``timeout``: grading seconds). ``run_single`` returns
    ``{"reward_score": DenseScore, "reward_extra_info": {score, prm, acc, fluxprm_steps, fluxprm_unscored,
    fluxprm_token_rewards}}``; :meth:`assemble_rm_scores` writes the placement into ``rm_scores``.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: str | None = None,
                 reward_model_tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, compute_score)
        reward_cfg = config.get("reward", {}) if hasattr(config, "get") else {}
        options = _options(reward_cfg.get("reward_kwargs") if hasattr(reward_cfg, "get") else None)
        options.update({k: v for k, v in kwargs.items() if k in _OPTION_NAMES})
        self.beta = float(options.get("beta", DEFAULT_BETA))
        self.dense = bool(options.get("dense", True))
        self.timeout = float(options.get("timeout", 5.0))
        self.rm = shared_model(options.get("model"), device=str(options.get("device", "auto")))
        self._batcher = _Batcher(lambda batch: _score_samples(self.rm, self.tokenizer, batch, self.beta, self.dense,
                                                              self.timeout))

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]  # as verl's NaiveRewardManager: of multi-sequence outputs only the last is rewarded
        scored = await self._batcher.submit(_sample_from_item(item, self.tokenizer))
        return {"reward_score": DenseScore(scored.reward, scored.placement, scored.length),
                "reward_extra_info": scored.extra_info()}

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[float]) -> torch.Tensor:
        """``rm_scores`` [batch, response_len]: each :class:`DenseScore`'s placement; a plain float (another
        manager's, or a sample that failed) on the last valid token, as verl's base does."""
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        lengths = _valid_response_lengths(data)
        for i, score in enumerate(scores):
            _write_row(rm_scores[i], int(lengths[i]), decode_placement(score), float(score))
        return rm_scores


# ----------------------------------------------------------------------------------------- legacy registry

class FluxPRMLegacyRewardManager(AbstractRewardManager):
    """The same reward in verl's legacy ``AbstractRewardManager`` interface (``verl.workers.reward_manager``, what
    verl before the Reward Loop and custom trainers call): ``__call__(data, return_dict)`` → ``reward_tensor``
    [batch, response_len], dense by default, the whole batch scored in one PRM call."""

    def __init__(self, tokenizer: Any, num_examine: int = 0, compute_score: Any = None,
                 reward_fn_key: str = "data_source", *, model: Any = None, beta: float = DEFAULT_BETA,
                 dense: bool = True, device: str = "auto", timeout: float = 5.0, **kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.beta = float(beta)
        self.dense = bool(dense)
        self.timeout = float(timeout)
        self.rm = shared_model(model, device=device)
        self._printed = 0

    def __call__(self, data: DataProto, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        precomputed = self._extract_reward_from_rm_scores(data, return_dict)
        if precomputed is not None:  # a reward model already scored the batch (verl's convention)
            return precomputed
        samples = [_sample_from_item(data[i], self.tokenizer) for i in range(len(data))]
        results = _score_samples(self.rm, self.tokenizer, samples, self.beta, self.dense, self.timeout)
        reward_tensor = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        lengths = _valid_response_lengths(data)
        extra: dict[str, list[Any]] = {}
        for i, result in enumerate(results):
            _write_row(reward_tensor[i], int(lengths[i]), (result.length, result.placement), result.reward)
            for key, value in result.extra_info().items():
                extra.setdefault(key, []).append(value)
        while self._printed < self.num_examine and self._printed < len(samples):
            s, r = samples[self._printed], results[self._printed]
            print(f"[fluxprm] problem: {s.problem[:200]!r}\n[response] {s.response[:500]!r}\n[ground_truth] {s.gold}"
                  f"\n[score] {r.reward:.4f} (prm {r.prm:.4f}, acc {r.acc:.0f}, {r.steps} steps)")
            self._printed += 1
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": extra}
        return reward_tensor


# ----------------------------------------------------------------------------------------- streaming (agent loop)

_LAZY: dict[str, type] = {}


def _agent_loop_classes() -> dict[str, type]:
    """Built on first use: verl's agent loop imports its rollout stack (and ``cachetools``), which the reward
    managers do not need."""
    if _LAZY:
        return _LAZY
    import hydra
    from verl.experimental.agent_loop import AgentLoopManager, AgentLoopOutput
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, _agent_loop_registry
    from verl.utils.ray_utils import auto_await

    class FluxPRMAgentLoopManager(AgentLoopManager):
        """verl's agent loop manager, then each sample's ``rm_scores`` rewritten from its fluxprm placement.

        For the V0 trainer (``trainer.use_v1=false``): rewards stream with the rollout and ``_postprocess`` puts each
        scalar on the last token; the placement travelled beside it in ``reward_extra_info``. Set
        ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=fluxprm.rl.verl.FluxPRMAgentLoopManager``.
        """

        @auto_await
        async def generate_sequences(self, prompts: DataProto) -> DataProto:
            output = await super().generate_sequences(prompts)
            return apply_token_rewards(output)

    class FluxPRMAgentLoopOutput(AgentLoopOutput):
        """An agent loop output whose ``as_dict`` (what verl's V1 worker writes to the TransferQueue) carries the
        dense row: the placement from ``reward_extra_info`` instead of the scalar on the last token."""

        def as_dict(self) -> dict[str, Any]:
            out = super().as_dict()
            info = self.extra_fields.get("reward_extra_info") or {}
            placed = decode_placement(info.get(TOKEN_REWARDS_KEY)) if isinstance(info, Mapping) else None
            row = out.get("rm_scores")
            if placed is not None and row is not None:
                # a multi-output trajectory copies the last output's info to the others: those keep the scalar
                _write_row(row, int(row.shape[0]), placed, float(row.sum()), warn=False)
            return out

    def densify(output: Any) -> Any:
        if isinstance(output, list):
            return [densify(o) for o in output]
        if type(output) is not AgentLoopOutput:  # a subclass of its own: keep it (scalar on the last token)
            return output
        fields = {name: getattr(output, name) for name in AgentLoopOutput.model_fields}
        return FluxPRMAgentLoopOutput.model_construct(_fields_set=set(output.model_fields_set), **fields)

    class FluxPRMDenseAgentLoop(AgentLoopBase):
        """Runs another registered agent loop (``inner``, default ``single_turn_agent``) and returns its output as
        :class:`FluxPRMAgentLoopOutput`, so verl's V1 trainer (the default) stores the dense row. Register it with
        ``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (a YAML list entry ``{name: fluxprm_dense,
        _target_: fluxprm.rl.verl.FluxPRMDenseAgentLoop, inner: single_turn_agent}``) and select it with
        ``default_agent_loop=fluxprm_dense`` (or a dataset's ``agent_name``)."""

        def __init__(self, inner: str = "single_turn_agent", name: str | None = None, **kwargs: Any) -> None:
            if inner not in _agent_loop_registry:
                raise ValueError(f"fluxprm_dense wraps agent loop {inner!r}, which is not registered "
                                 f"(registered: {sorted(_agent_loop_registry)})")
            self.inner = hydra.utils.instantiate(_agent_loop_registry[inner], **kwargs)

        async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
            return densify(await self.inner.run(sampling_params, **kwargs))

    for cls in (FluxPRMAgentLoopManager, FluxPRMAgentLoopOutput, FluxPRMDenseAgentLoop):
        cls.__module__, cls.__qualname__ = "fluxprm.rl.verl", cls.__name__  # locatable by hydra, pickle, register
    _LAZY.update({c.__name__: c for c in (FluxPRMAgentLoopManager, FluxPRMAgentLoopOutput, FluxPRMDenseAgentLoop)})
    _LAZY["densify"] = densify
    return _LAZY


_LAZY_NAMES = ("FluxPRMAgentLoopManager", "FluxPRMAgentLoopOutput", "FluxPRMDenseAgentLoop")


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return _agent_loop_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------- registration

if __name__ == "fluxprm.rl.verl":
    _register_reward_loop(REGISTERED_NAME)(FluxPRMRewardManager)
    _register_legacy(REGISTERED_NAME)(FluxPRMLegacyRewardManager)
else:  # executed from its file path by verl's load_extern_object: hand out the package module's objects
    globals().update({_name: getattr(_CANONICAL, _name) for _name in __all__ if _name not in _LAZY_NAMES})
    __getattr__ = _CANONICAL.__getattr__  # noqa: F811
    if sys.modules.get(__name__) is _CANONICAL:
        del sys.modules[__name__]
