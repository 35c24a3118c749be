"""RL rewards from a PRM: scalar and dense (token-level) rewards, and adapters for the trainers people run.

* :mod:`fluxprm.rl.rewards` — ``reward(prompts, completions, gold, beta, model, dense=...)``, the formulas.
* :mod:`fluxprm.rl.trl` — ``GRPOReward``, a reward function TRL's ``GRPOTrainer`` accepts.
* :mod:`fluxprm.rl.verl` — ``compute_score`` for verl's ``custom_reward_function`` (sync, and async over HTTP to
  ``fluxprm serve``) and the ``fluxprm`` reward managers that write dense per-step token rewards.

Names load on first use: importing this package does not import torch, TRL or verl.
"""

from __future__ import annotations

from fluxprm._lazy import lazy_exports

_EXPORTS = {
    "reward": "fluxprm.rl.rewards",
    "RewardModel": "fluxprm.rl.rewards",
    "DenseReward": "fluxprm.rl.rewards",
    "DEFAULT_BETA": "fluxprm.rl.rewards",
    "GRPOReward": "fluxprm.rl.trl",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
