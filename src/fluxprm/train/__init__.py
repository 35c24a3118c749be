"""``fluxprm train``: the ReasonFlux-PRM joint objective on a causal-LM backbone, one module per job.

- :mod:`~fluxprm.train.config` — ``TrainConfig``, every knob with its default and help, declared once and
  checked (``ConfigError``); ``parse_overrides`` for ``--set KEY=VALUE``;
- :mod:`~fluxprm.train.data` — label records and labelled trace files → ``Example``;
- :mod:`~fluxprm.train.objective` — ``Targets`` and ``joint_loss`` (step + trajectory, MSE + BCE);
- :mod:`~fluxprm.train.features` — cached frozen-backbone features (``mode: frozen``);
- :mod:`~fluxprm.train.loop` — ``train``: the run, one optimizer-step loop for frozen, lora and full; its
  failures ``NoTrainingData`` and ``TrainingDiverged`` (both ``TrainError``);
- :mod:`~fluxprm.train.checkpoint` — the checkpoint folder ``fluxprm score -m`` loads;
- :mod:`~fluxprm.train.plots` — ``loss.png``.

The step head is read at the last token of every step and the trajectory head at the last token
(see :mod:`fluxprm.models.fluxprm_format`); examples are encoded with the very ``encode`` used at
scoring time, so training and inference cannot drift apart.

Names load on first use: ``TrainConfig`` (and so ``fluxprm train --help`` and its config errors) needs no torch.
"""

from fluxprm._lazy import lazy_exports

_EXPORTS = {
    "train": "fluxprm.train.loop",
    "build_prm": "fluxprm.train.loop",
    "TrainError": "fluxprm.train.loop",
    "NoTrainingData": "fluxprm.train.loop",
    "TrainingDiverged": "fluxprm.train.loop",
    "TrainConfig": "fluxprm.train.config",
    "ConfigError": "fluxprm.train.config",
    "parse_overrides": "fluxprm.train.config",
    "joint_loss": "fluxprm.train.objective",
    "Targets": "fluxprm.train.objective",
    "pos_weights": "fluxprm.train.objective",
    "Example": "fluxprm.train.data",
    "load_examples": "fluxprm.train.data",
    "extract_features": "fluxprm.train.features",
    "save_checkpoint": "fluxprm.train.checkpoint",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
