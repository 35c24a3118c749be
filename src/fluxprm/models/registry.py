"""Known PRMs by name: where they live and how to read them.

Adding a model is one entry here. ``hub_id`` models are resolved through the local Hugging Face cache
(or downloaded where the hub is reachable); ``bundled`` models ship inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    format: str
    hub_id: str | None = None
    bundled: str | None = None           # folder name under fluxprm/data/ for embedded models
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # format options (system_prompt, aggregate, ...)


REGISTRY: dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry("fluxprm-mini", "fluxprm", bundled="fluxprm-mini",
               description="embedded default: SmolLM2-135M-Instruct + step and trajectory heads trained by "
                           "fluxprm train (offline, CPU-friendly)"),
    ModelEntry("reasonflux-prm-7b", "qwen-prm", hub_id="Gen-Verse/ReasonFlux-PRM-7B",
               description="ReasonFlux-PRM-7B: trajectory-aware PRM, scores thinking and response steps",
               # The authors' README builds the chat with no system turn (the template then adds its default).
               options={"system_prompt": None}),
    ModelEntry("reasonflux-prm-1.5b", "scalar-head", hub_id="Gen-Verse/ReasonFlux-PRM-1.5B",
               description="ReasonFlux-PRM-1.5B: causal LM + reward_head.pt, sigmoid on the last token"),
    ModelEntry("qwen2.5-math-prm-7b", "qwen-prm", hub_id="Qwen/Qwen2.5-Math-PRM-7B",
               description="Qwen2.5-Math-PRM-7B: response-step PRM", options={"system_prompt": QWEN_MATH_SYSTEM}),
    ModelEntry("qwen2.5-math-prm-72b", "qwen-prm", hub_id="Qwen/Qwen2.5-Math-PRM-72B",
               description="Qwen2.5-Math-PRM-72B: response-step PRM", options={"system_prompt": QWEN_MATH_SYSTEM}),
    ModelEntry("qwen2.5-math-7b-prm800k", "qwen-prm", hub_id="Qwen/Qwen2.5-Math-7B-PRM800K",
               description="Qwen2.5-Math-7B-PRM800K: PRM trained on PRM800K only",
               options={"system_prompt": QWEN_MATH_SYSTEM}),
    ModelEntry("math-shepherd-mistral-7b", "math-shepherd", hub_id="peiyi9979/math-shepherd-mistral-7b-prm",
               description="Math-Shepherd PRM (Mistral-7B), steps tagged with 'ки'"),
]}


def lookup(name: str) -> ModelEntry | None:
    """Registry entry for ``name`` (case-insensitive), also matching its hub id."""
    key = name.lower()
    if key in REGISTRY:
        return REGISTRY[key]
    for entry in REGISTRY.values():
        if entry.hub_id and entry.hub_id.lower() == key:
            return entry
    return None
