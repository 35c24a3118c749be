"""``fluxprm train``: a thin entry over :func:`fluxprm.train.train`.

Every training knob is a :class:`~fluxprm.train.TrainConfig` field and has a generated flag. Layering, lowest
first: the field defaults, ``--config FILE.yaml``, the flags given, ``--set KEY=VALUE`` (kept for YAML values
such as lists, and for scripts written before the flags existed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fluxprm.cli.common import checked_inputs
from fluxprm.cli.options import Expand, generated_options
from fluxprm.cli.report import die, say, stage_progress
from fluxprm.train.config import TrainConfig

__all__ = ["train"]


@generated_options
def train(
    *,
    labels: Annotated[list[Path], typer.Argument(
        help="Label files from `fluxprm label` and/or labelled trace files (PRMBench, ProcessBench, PRM800K, "
             "Math-Shepherd, Best-of-N pools with correctness).", metavar="LABELS", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Checkpoint folder (loads with `fluxprm score -m`).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file with any of the options below, "
                                                   "by field name (max_steps: 200).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override of any option, the value "
                                                      "read as YAML (--set feature_layers=[-1,-2]); repeatable.")] = None,
    flags: Annotated[dict[str, Any], Expand(of=TrainConfig)],
) -> None:
    """Train a PRM with the joint step + trajectory objective of ReasonFlux-PRM.

    Every option after --set is a TrainConfig field. Later sources win: the defaults shown, --config FILE.yaml,
    the flags given, then --set KEY=VALUE.
    """
    from fluxprm.cli.report import print_causes
    from fluxprm.jobs import OutputPathError, check_folder_outputs
    from fluxprm.train.config import ConfigError, parse_overrides

    paths = checked_inputs(labels)
    try:  # the checkpoint writes its own train_config.yaml and other files into -o: a config there would be lost
        check_folder_outputs([str(config)] if config else [], out, None)
    except OutputPathError as exc:
        die(str(exc))
    try:
        overrides: dict[str, Any] = {**flags, **parse_overrides(set_ or [])}
        cfg = TrainConfig.from_yaml(config, overrides)
    except (ConfigError, ValueError, TypeError, OSError) as exc:
        die(str(exc))
    from fluxprm.train.loop import TrainError  # torch: only once the configuration is known to be valid
    from fluxprm.train.loop import train as run_train
    display, on_progress = stage_progress("training")
    with display:
        try:
            summary = run_train(paths, out, cfg, on_progress)
        except TrainError as exc:  # nothing to train on, or the loss diverged: the run failed, nothing saved
            die(str(exc), code=1)
        except (ConfigError, OutputPathError, ValueError, FileNotFoundError, IsADirectoryError) as exc:
            die(str(exc))
        except OSError as exc:  # a checkpoint folder that cannot be created or written
            die(f"cannot write {exc.filename or out}: {exc.strerror or exc}")
    say(f"trained {summary['mode']} on {summary['train']} examples ({summary['val']} held out, "
        f"{summary['rejected']} rejected) in {summary['seconds']} s → {out}")
    print_causes(summary["rejected"], summary.get("errors"), summary.get("rejection_causes") or [])
