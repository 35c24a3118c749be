"""fluxprm: trajectory-aware process reward models for thinking traces.

Library API (mirrors the CLI)::

    import fluxprm
    prm = fluxprm.load_prm("reasonflux-prm-7b")      # or a folder, a hub id; default: fluxprm-mini
    scores = prm.score(traces)                         # Trace objects or raw record dicts → [TraceScore]
"""

from fluxprm.engine import ScoreOptions, score_traces
from fluxprm.models import FORMATS, REGISTRY, PRMInput, TraceScore, TransformerPRM, load_prm
from fluxprm.steps import StepConfig
from fluxprm.traces import FieldMap, Trace, iter_traces, parse_record

__version__ = "0.1.0"

__all__ = ["FORMATS", "REGISTRY", "FieldMap", "PRMInput", "ScoreOptions", "StepConfig", "Trace", "TraceScore",
           "TransformerPRM", "iter_traces", "load_prm", "parse_record", "score_traces", "__version__"]
