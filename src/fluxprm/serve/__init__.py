"""``fluxprm serve``: a PRM reward server (FastAPI + uvicorn) with dynamic batching over ``Scorer.score_batch``.

* :mod:`fluxprm.serve.options` — ``ServeOptions`` (every server knob, declared once; no torch).
* :mod:`fluxprm.serve.protocols` — the native ``/v1/score``, OpenRLHF ``/get_reward`` and vLLM ``/pooling`` shapes.
* :mod:`fluxprm.serve.batcher` — ``DynamicBatcher``: requests coalesced into scoring calls on one model thread.
* :mod:`fluxprm.serve.app` — ``create_app``: routes, auth, limits, health.

Names load on first use, so importing this package costs nothing.
"""

from __future__ import annotations

from fluxprm._lazy import lazy_exports

_EXPORTS = {
    "ServeOptions": "fluxprm.serve.options",
    "create_app": "fluxprm.serve.app",
    "DynamicBatcher": "fluxprm.serve.batcher",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
