"""Fill the backbone-feature cache for every fluxprm-mini file (training and dev) before training.

Feature extraction is the slow part of rebuilding fluxprm-mini on a CPU (~1,300 tokens/s for SmolLM2-135M
on 2 cores). It is cached per example (see :mod:`fluxprm.train.features`), so this script is resumable:
kill it and rerun, and only the examples not yet cached are computed. ``fluxprm train`` and
``scripts/mini/evaluate.py`` then read the same cache. Files are taken in the order given; each prints
its progress. Training files are read as ``fluxprm train`` reads them; dev pool files also as PRMBench
original processes when ``--originals`` names them.

Usage: ``python scripts/mini/features.py --config src/fluxprm/configs/fluxprm-mini.yaml FILE...``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fluxprm.device import resolve_device, resolve_dtype
from fluxprm.records import BadRecord
from fluxprm.train import TrainConfig, extract_features
from fluxprm.train.data import Example, load_examples
from fluxprm.train.loop import build_prm
from fluxprm.steps import prepare
from fluxprm.traces import FieldMap, iter_traces


def originals(path: Path, cfg: TrainConfig) -> list[Example]:
    """PRMBench rows read through their ``original_process`` (the error-free solution), as evaluate.py reads them."""
    out = []
    for t in iter_traces([str(path)], FieldMap(steps="original_process")):
        if isinstance(t, BadRecord):
            continue
        inp = prepare(t, cfg.step_config())
        out.append(Example(t.id, inp.problem, inp.thinking_steps, inp.response_steps, [], [], None, None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--config", type=Path, default=Path("src/fluxprm/configs/fluxprm-mini.yaml"))
    ap.add_argument("--originals", type=Path, nargs="*", default=[],
                    help="PRMBench files whose original processes are scored too (evaluate.py's correct samples)")
    args = ap.parse_args()
    cfg = TrainConfig.from_yaml(args.config)
    device = resolve_device("auto")
    prm = build_prm(cfg, device, resolve_dtype(cfg.dtype, device))  # as `fluxprm train` does: same cache keys
    jobs = [(str(f), list(load_examples([f], cfg.step_config(), [], cfg.mask_after_error))) for f in args.files]
    jobs += [(f"{f} (original processes)", originals(f, cfg)) for f in args.originals]
    for name, examples in jobs:
        start = time.time()

        def progress(done: int, total: int) -> None:
            if done % 50 == 0 or done == total:
                print(f"{name}: {done}/{total} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

        feats = extract_features(prm, examples, cfg, progress)
        print(f"{name}: {len(examples)} examples, {sum(f is None for f in feats)} too long, "
              f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
