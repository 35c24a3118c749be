"""PRM checkpoint formats (one module each), their registry, the registry of known models, and ``load_prm``.

Names load on first use: ``fluxprm.models.registry`` and ``fluxprm.models.fluxprm_config`` need no torch, and
importing them must not pay for the formats that do.
"""

from fluxprm._lazy import lazy_exports

_EXPORTS = {
    "TransformerPRM": "fluxprm.models.base",
    "FORMATS": "fluxprm.models.formats",
    "detect_format": "fluxprm.models.formats",
    "load_prm": "fluxprm.models.loading",
    "REGISTRY": "fluxprm.models.registry",
    "ModelNotFound": "fluxprm.models.resolve",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
