"""``math-shepherd``: peiyi9979/math-shepherd-mistral-7b-prm and PRMs trained the same way.

Layout (model card): ``f"{question} {output}"`` where every step ends with the tag `` ки``; the
reward at a tag is P('+') / (P('+') + P('-')) from the LM's next-token logits at the tag position.
Only the two candidate rows of the LM head are applied, and only at the tags — the full-vocabulary
projection at every position, which the card computes and discards, is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluxprm.models.backbone import load_standard
from fluxprm.models.base import CheckpointFormat, LoadRequest, TransformerPRM
from fluxprm.models.weights import read_tensors

STEP_TAG = "ки"
_STEP_PREFIX = re.compile(r"^\s*Step\s*\d+\s*:", re.IGNORECASE)


class MathShepherdPRM(TransformerPRM):
    format = "math-shepherd"
    default_aggregate = "min"  # the Math-Shepherd paper ranks solutions by their weakest step

    def __init__(self, backbone: nn.Module, tokenizer: Any, lm_head_rows: torch.Tensor, *,
                 step_tag: str = STEP_TAG, **kw: Any):
        super().__init__(backbone, tokenizer, **kw)
        self.candidate_rows = lm_head_rows  # (2, h): rows of '+' and '-'
        self.step_tag = step_tag

    def build_text(self, problem: str, steps: list[str]) -> tuple[str, list[int]]:
        """``question Step 1: ... ки\\nStep 2: ... ки``; steps already numbered keep their numbers."""
        text = f"{problem} "
        reads = []
        for k, step in enumerate(steps, start=1):
            step = step.replace(self.step_tag, "").strip()
            if not _STEP_PREFIX.match(step):
                step = f"Step {k}: {step}"
            text += step + f" {self.step_tag}"
            reads.append(len(text) - 1)
            if k < len(steps):
                text += "\n"
        return text, reads

    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        text, reads = self.build_text(problem, steps)
        return self.offsets_to_positions(text, reads, add_special_tokens=True)  # the card's tokenizer.encode

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden.to(self.candidate_rows.dtype) @ self.candidate_rows.T
        return torch.softmax(logits.float(), dim=-1)[:, 0]


def _detect(folder: Path, config: dict[str, Any]) -> bool:
    """No architecture marks these (they are plain causal LMs): the name has to say "shepherd"."""
    return "shepherd" in str(config.get("_name_or_path", "")).lower() or "shepherd" in folder.name.lower()


def _load(req: LoadRequest) -> MathShepherdPRM:
    config, tokenizer, backbone = load_standard(req.folder, req.dtype, req.device)
    good, bad = req.options.get("good_token", "+"), req.options.get("bad_token", "-")
    cand = tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
    rows = read_tensors(req.folder, ("lm_head.weight",)).get("lm_head.weight")
    if rows is None and not getattr(config, "tie_word_embeddings", False):
        # not a causal LM (e.g. a qwen-prm checkpoint under --format math-shepherd): reading the embeddings as an
        # LM head would score every step with numbers that mean nothing
        raise ValueError(f"{req.folder}: no 'lm_head.weight' and untied embeddings: not a causal language model, "
                         "so not a math-shepherd checkpoint")
    if rows is None:  # tied embeddings: the LM head is the input embedding matrix
        rows = backbone.get_input_embeddings().weight.detach().cpu()
    candidate_rows = rows[[cand[0], cand[-1]]].to(req.device, req.dtype)
    return MathShepherdPRM(backbone, tokenizer, candidate_rows, step_tag=req.options.get("step_tag", STEP_TAG),
                           **req.common(config))


FORMAT = CheckpointFormat("math-shepherd", _detect, _load, "steps tagged 'ки', P('+') vs P('-') at each tag")
