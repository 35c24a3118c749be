"""fluxprm: trajectory-aware process reward models for thinking traces.

Library API (mirrors the CLI)::

    import fluxprm
    prm = fluxprm.load_prm("reasonflux-prm-7b")       # or a folder, a hub id; default: fluxprm-mini
    results = fluxprm.score_batch(prm, traces)        # Trace objects or raw record dicts → [TraceScore | BadRecord]
    scores = fluxprm.score(prm, traces)               # → [TraceScore]; raises on the first unscorable trace

Names are imported on first use, so ``import fluxprm`` (and ``fluxprm.scores``, ``fluxprm.traces``) does not
load torch: commands that work on score files start instantly.
"""

from __future__ import annotations

from fluxprm._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "BadRecord": "fluxprm.records",
    "FieldMap": "fluxprm.traces",
    "Trace": "fluxprm.traces",
    "iter_traces": "fluxprm.traces",
    "parse_record": "fluxprm.traces",
    "PRMInput": "fluxprm.steps",
    "StepConfig": "fluxprm.steps",
    "prepare": "fluxprm.steps",
    "TraceScore": "fluxprm.scores",
    "read_scores": "fluxprm.scores",
    "join_scores": "fluxprm.scores",
    "ScoreOptions": "fluxprm.engine.options",
    "Scorer": "fluxprm.engine.score",
    "ScoreFailure": "fluxprm.engine.score",
    "score": "fluxprm.engine.score",
    "score_batch": "fluxprm.engine.score",
    "score_traces": "fluxprm.engine.score",
    "run_score_job": "fluxprm.score_job",
    "TransformerPRM": "fluxprm.models.base",
    "FORMATS": "fluxprm.models.formats",
    "REGISTRY": "fluxprm.models.registry",
    "load_prm": "fluxprm.models.loading",
    "ScoreSource": "fluxprm.scored",
    "SelectOptions": "fluxprm.select",
    "run_select": "fluxprm.select",
    "BonOptions": "fluxprm.bon",
    "run_bon": "fluxprm.bon",
    "EvalOptions": "fluxprm.eval",
    "EvalSource": "fluxprm.eval",
    "run_eval": "fluxprm.eval",
    "ViewOptions": "fluxprm.view",
    "build_page": "fluxprm.view",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)[0]


def __dir__() -> list[str]:
    return __all__
