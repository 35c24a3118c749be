"""``scalar-head``: ReasonFlux-PRM-1.5B — a causal LM with ``reward_head.pt`` = ``Linear(h, 1)``.

Model card recipe: tokenize ``problem + completion`` as plain text, take the last layer's hidden
state at the last non-pad token, apply the head and a sigmoid. That number is the trace's ``score``
and its ``trajectory_reward``-free ranking value.

Because the backbone is causal, the hidden state at the last token of step t is exactly what the
model would compute for the prefix ``problem + steps[:t]``; reading the head there gives dense
per-step rewards from the same single forward pass, at no extra cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluxprm.models.backbone import load_standard
from fluxprm.models.base import CheckpointFormat, LoadRequest, TransformerPRM
from fluxprm.models.weights import linear_from, load_torch_state


class ScalarHeadPRM(TransformerPRM):
    format = "scalar-head"
    default_aggregate = "last"

    def __init__(self, backbone: nn.Module, tokenizer: Any, reward_head: nn.Linear, *,
                 joiner: str = "\n\n", **kw: Any):
        super().__init__(backbone, tokenizer, **kw)
        self.reward_head = reward_head.eval()
        self.joiner = joiner

    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        text, ends = problem, []
        for k, step in enumerate(steps):
            text += (self.joiner if k else "") + step
            ends.append(len(text) - 1)
        ids, positions = self.offsets_to_positions(text, ends, add_special_tokens=True)  # as tokenizer(text)
        if positions:
            positions[-1] = len(ids) - 1  # the card reads the very last token
        return ids, positions

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.reward_head(hidden.to(self.reward_head.weight.dtype)).float().squeeze(-1))


def _detect(folder: Path, config: dict[str, Any]) -> bool:
    return (folder / "reward_head.pt").exists()


def _load(req: LoadRequest) -> ScalarHeadPRM:
    config, tokenizer, backbone = load_standard(req.folder, req.dtype, req.device)
    head = linear_from(load_torch_state(req.folder / "reward_head.pt"), "")
    return ScalarHeadPRM(backbone, tokenizer, head.to(req.device, req.dtype),
                         joiner=req.options.get("joiner", "\n\n"), **req.common(config))


FORMAT = CheckpointFormat("scalar-head", _detect, _load, "problem + completion, sigmoid of reward_head.pt")
