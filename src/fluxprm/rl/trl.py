"""``GRPOReward``: fluxprm's RL reward as a reward function TRL's ``GRPOTrainer`` calls.

Use::

    from trl import GRPOConfig, GRPOTrainer
    from fluxprm.rl import GRPOReward

    trainer = GRPOTrainer(model=policy, args=GRPOConfig(...), train_dataset=dataset,   # columns: prompt, answer
                          reward_funcs=[GRPOReward(beta=0.75, gold_column="answer")])

Each completion gets the scalar reward of :mod:`fluxprm.rl.rewards`, ``(1 − β)·outcome + β·prm``, computed by
its public parts (:func:`~fluxprm.rl.rewards.prm_reward`, :func:`~fluxprm.rl.rewards.outcome_reward`,
:func:`~fluxprm.rl.rewards.mix`), so a reward logged in TRL is exactly what ``RewardModel.rewards`` gives for
the same prompts, completions and gold answers.

How it meets TRL 1.16's calling convention (``GRPOTrainer._calculate_rewards``):

* TRL calls ``func(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=...,
  log_extra=..., log_metric=...)``, every dataset column except ``prompt`` as a list aligned with the
  completions (the gold answer of a prompt repeated for each of its generations). ``__call__`` takes exactly
  that and ignores what it does not use, so new keywords a later TRL adds do not break it.
* TRL names the reward's columns (``rewards/<name>/mean``, ``rewards/<name>/std``, the completions table) by the
  callable's ``__name__``; an instance has none of its own, so ``name`` (default ``"fluxprm"``) is set as one.
  Two instances in one trainer need two names, or their extra metrics would be averaged together.
* Conversational datasets work: prompts are message lists (the last user turn is the problem) and completions
  ``[{"role": "assistant", "content": ...}]`` (the assistant turns are the response).
* ``log_metric`` (when TRL passes it) receives the batch means ``<name>/prm`` (PRM part, before β),
  ``<name>/outcome`` (over completions with a gold answer: the accuracy) and ``<name>/unscored`` (fraction the PRM
  could not score). TRL averages them over the logging step and across processes and logs them next to ``kl``
  and ``entropy``; they say which half of the mix moves when the reward does. ``log_extra`` gets the same
  per completion for the completions table (``log_completions=True``).
* The object is picklable when built from a model name (or the default): TRL's async GRPO spawns a rollout
  process and pickles the reward functions to it. The loaded model is not pickled (it is reloaded, once per
  process, on first call); an instance built around an already loaded model refuses to pickle with a message
  saying to pass the name instead, rather than trying to copy a model and its lock into another process.

Why the other choices:

* **Lazy load.** The PRM loads on the first call, through :func:`~fluxprm.rl.rewards.shared_model`, so building
  the trainer stays cheap, a pickled copy loads in the process that uses it, and several ``GRPOReward``\\ s on
  one model (a mixed reward and a PRM-only one, say) share one copy of it in memory.
* **Missing gold column** → outcome 0 for every completion and one warning per instance (not per step: a
  GRPO run calls this thousands of times). It does not raise: a PRM-only run is legitimate, and β < 1 with no
  gold is a misconfiguration the warning names. ``gold_column=None`` asks for no outcome silently. A ``None``
  or empty gold entry means "no gold for this prompt": outcome counts 0 in the reward and is left out of the
  logged accuracy.
* **A part with weight 0 is not computed**: ``beta=0`` never loads the PRM (an outcome-only reward through the
  same grader), ``beta=1`` never grades. That makes the two-reward recipe (PRM and outcome as separate TRL
  reward functions with ``reward_weights``) cost no more than one.
* **Never raises on a completion.** An empty completion, one with no steps, or one the engine rejects gets
  PRM part 0 (the engine's per-trace ``BadRecord``); if the batch call itself fails, each completion is scored
  alone so one bad completion costs only itself; grading runs in worker processes with a timeout. A model that
  cannot be *loaded* does raise, on the first call: training on a silently missing reward is worse.
* **What it returned** is kept: :attr:`GRPOReward.history` holds the last ``history`` batches (default 1) as
  :class:`RewardBatch` (prompts, completions, gold, PRM and outcome parts, rewards), bounded so a long run does
  not grow memory; it is how to check, or debug, what the trainer was given.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fluxprm.rl.rewards import DEFAULT_BETA, RewardModel, mix, outcome_reward, prm_reward, shared_model

__all__ = ["GRPOReward", "RewardBatch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RewardBatch:
    """One call's inputs and outputs: ``rewards[i] = (1 − β)·(outcome[i] or 0) + β·prm[i]``.

    ``outcome[i]`` is ``None`` where there was no gold answer (or β = 1: not graded); ``unscored[i]`` is true
    where the PRM could not score completion ``i`` (its ``prm[i]`` is 0), always false when β = 0 (not scored).
    """

    prompts: list[Any]
    completions: list[Any]
    gold: list[Any]
    prm: list[float]
    outcome: list[float | None]
    unscored: list[bool]
    rewards: list[float]
    beta: float

    def __repr__(self) -> str:  # the completions can be long: a summary, not the texts
        n = len(self.rewards)
        mean = sum(self.rewards) / n if n else float("nan")
        return f"RewardBatch(n={n}, beta={self.beta}, mean_reward={mean:.4f}, unscored={sum(self.unscored)})"


class GRPOReward:
    """A TRL ``GRPOTrainer`` reward function: ``(1 − β)·outcome + β·prm`` per completion (see the module docstring).

    ``model``: a registry name, a checkpoint folder, a loaded ``TransformerPRM`` or a
    :class:`~fluxprm.rl.rewards.RewardModel` (default: the embedded fluxprm-mini). ``beta``: the PRM's weight in
    [0, 1]. ``gold_column``: the dataset column holding the gold answer (``None``: no outcome term). ``name``:
    TRL's name for the reward (its metric prefix). ``timeout``: seconds to grade one answer. ``history``: how
    many recent batches :attr:`history` keeps.
    """

    def __init__(self, model: Any = None, beta: float = DEFAULT_BETA, gold_column: str | None = "answer", *,
                 name: str = "fluxprm", device: str = "auto", timeout: float = 5.0, log_metrics: bool = True,
                 history: int = 1) -> None:
        beta = float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not name or not isinstance(name, str):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self.__name__ = name  # TRL: get_callable_name(func) → getattr(func, "__name__", ...)
        self.beta = beta
        self.gold_column = gold_column
        self.device = device
        self.timeout = float(timeout)
        self.log_metrics = log_metrics
        self.history: deque[RewardBatch] = deque(maxlen=history)
        # A name (or None) is loaded lazily and can be reloaded after pickling; an object is used as given.
        self._model_ref: Any = model
        self._loaded: RewardModel | None = model if isinstance(model, RewardModel) else None
        self._warned_missing_gold = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ TRL's call

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float]:
        """One reward per completion, with TRL's keywords (``completion_ids`` and ``trainer_state`` unused)."""
        prompts, completions = list(prompts), list(completions)
        n = len(completions)
        if len(prompts) != n:  # TRL never does this: a caller bug, not a bad completion
            raise ValueError(f"{len(prompts)} prompts but {n} completions")
        gold = self._gold(kwargs, n)
        if self.beta > 0.0:
            prm, unscored = self._prm_parts(prompts, completions)
        else:
            prm, unscored = [0.0] * n, [False] * n
        if self.beta < 1.0:
            outcome = [outcome_reward(c, g, self.timeout) for c, g in zip(completions, gold)]
        else:
            outcome = [None] * n
        rewards = [mix(p, o, self.beta) for p, o in zip(prm, outcome)]
        batch = RewardBatch(prompts, completions, gold, prm, outcome, unscored, rewards, self.beta)
        self.history.append(batch)
        if self.log_metrics:
            self._log(batch, kwargs.get("log_metric"), kwargs.get("log_extra"))
        return list(rewards)

    # ------------------------------------------------------------------------------------------ parts

    def _gold(self, kwargs: dict[str, Any], n: int) -> list[Any]:
        if self.gold_column is None:
            return [None] * n
        if self.gold_column not in kwargs:
            if not self._warned_missing_gold:
                self._warned_missing_gold = True
                columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
                logger.warning("%s: the dataset has no %r column (columns: %s): outcome is 0 for every completion. "
                               "Pass gold_column=<the gold answer column>, or gold_column=None for a PRM-only "
                               "reward.", self.__name__, self.gold_column, ", ".join(columns) or "none")
            return [None] * n
        gold = kwargs[self.gold_column]
        gold = list(gold) if isinstance(gold, (list, tuple)) else [gold] * n
        if len(gold) != n:
            raise ValueError(f"column {self.gold_column!r} has {len(gold)} entries for {n} completions")
        return gold

    def reward_model(self) -> RewardModel:
        """The loaded :class:`RewardModel` (loaded now on first use; shared with others on the same name)."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = shared_model(self._model_ref, self.device)
        return self._loaded

    def _prm_parts(self, prompts: list[Any], completions: list[Any]) -> tuple[list[float], list[bool]]:
        """PRM part per completion, and whether the PRM could not score it (then its part is 0)."""
        rm = self.reward_model()  # a load failure raises: see the module docstring
        try:
            _, results = rm.score(prompts, completions)
        except Exception as exc:  # noqa: BLE001 - fall back to one completion at a time
            logger.warning("%s: scoring the batch failed (%s: %s); scoring completions one by one",
                           self.__name__, type(exc).__name__, exc)
            results = [self._score_one(rm, p, c) for p, c in zip(prompts, completions)]
        prm, unscored = [], []
        for r in results:
            value = prm_reward(r, rm.alpha) if r is not None else 0.0
            prm.append(value if math.isfinite(value) else 0.0)
            unscored.append(r is None or getattr(r, "score", None) is None)
        return prm, unscored

    def _score_one(self, rm: RewardModel, prompt: Any, completion: Any) -> Any:
        try:
            return rm.score([prompt], [completion])[1][0]
        except Exception as exc:  # noqa: BLE001 - one completion's failure costs its PRM part only
            logger.warning("%s: PRM part 0 for a completion that could not be scored (%s: %s)",
                           self.__name__, type(exc).__name__, exc)
            return None

    def _log(self, batch: RewardBatch, log_metric: Callable[[str, float], None] | None,
             log_extra: Callable[[str, list], None] | None) -> None:
        """Batch means to TRL's metrics and per-completion parts to its completions table (when it offers them)."""
        graded = [o for o in batch.outcome if o is not None]
        n = len(batch.rewards)
        try:
            if log_metric is not None and n:
                if batch.beta > 0.0:
                    log_metric(f"{self.__name__}/prm", sum(batch.prm) / n)
                    log_metric(f"{self.__name__}/unscored", sum(batch.unscored) / n)
                if graded:
                    log_metric(f"{self.__name__}/outcome", sum(graded) / len(graded))
            if log_extra is not None and n:
                if batch.beta > 0.0:
                    log_extra(f"{self.__name__}/prm", list(batch.prm))
                if batch.beta < 1.0:
                    log_extra(f"{self.__name__}/outcome", list(batch.outcome))
        except Exception as exc:  # noqa: BLE001 - logging must never cost the rewards
            logger.warning("%s: logging metrics failed (%s: %s)", self.__name__, type(exc).__name__, exc)

    # ------------------------------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the loaded model and the lock; a copy reloads by name on its first call."""
        if self._model_ref is not None and not isinstance(self._model_ref, str):
            raise TypeError(f"{type(self).__name__} {self.__name__!r} was built around a loaded model and cannot be "
                            "pickled (TRL's async GRPO sends reward functions to another process): build it "
                            "from the model's name or folder instead, e.g. GRPOReward(model='fluxprm-mini')")
        state = dict(self.__dict__)
        state["_loaded"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        model = self._model_ref if isinstance(self._model_ref, str) or self._model_ref is None else "<loaded>"
        return (f"GRPOReward(model={model!r}, beta={self.beta}, gold_column={self.gold_column!r}, "
                f"name={self.__name__!r})")
