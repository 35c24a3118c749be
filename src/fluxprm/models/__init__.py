"""PRM checkpoint formats (one module each), the registry of known models, and ``load_prm``."""

from fluxprm.models.base import PRMInput, TraceScore, TransformerPRM
from fluxprm.models.loading import FORMATS, detect_format, load_prm
from fluxprm.models.registry import REGISTRY

__all__ = ["FORMATS", "PRMInput", "REGISTRY", "TraceScore", "TransformerPRM", "detect_format", "load_prm"]
