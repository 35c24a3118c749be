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
"""

from fluxprm.train.checkpoint import save_checkpoint
from fluxprm.train.config import ConfigError, TrainConfig, parse_overrides
from fluxprm.train.data import Example, load_examples
from fluxprm.train.features import extract_features
from fluxprm.train.loop import NoTrainingData, TrainError, TrainingDiverged, build_prm, train
from fluxprm.train.objective import Targets, joint_loss, pos_weights

__all__ = ["train", "TrainConfig", "ConfigError", "parse_overrides", "TrainError", "NoTrainingData",
           "TrainingDiverged", "joint_loss", "Targets", "pos_weights", "Example", "load_examples",
           "extract_features", "build_prm", "save_checkpoint"]
