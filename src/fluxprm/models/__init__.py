"""PRM checkpoint formats (one module each), their registry, the registry of known models, and ``load_prm``."""

from fluxprm.models.base import TransformerPRM
from fluxprm.models.formats import FORMATS, detect_format
from fluxprm.models.loading import load_prm
from fluxprm.models.registry import REGISTRY
from fluxprm.models.resolve import ModelNotFound

__all__ = ["FORMATS", "ModelNotFound", "REGISTRY", "TransformerPRM", "detect_format", "load_prm"]
