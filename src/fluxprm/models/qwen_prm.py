"""``qwen-prm``: Qwen2.5-Math-PRM-7B/72B, ReasonFlux-PRM-7B, Qwen2.5-Math-7B-PRM800K.

Layout (model cards): a chat with the problem as the user turn and the steps joined by ``<extra_0>``
(plus a trailing one) as the assistant turn; the step reward is P(class 1) of a two-class head at
every separator token. Weights: the backbone under ``model.*`` and the head
``score = Sequential(Linear(h, h), ReLU, Linear(h, 2))`` under ``score.0.*`` / ``score.2.*``, the
names vLLM's and SGLang's ``qwen2_rm.py`` load — so a downloaded checkpoint loads with no remote code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluxprm.models.backbone import load_standard
from fluxprm.models.base import CheckpointFormat, LoadRequest, TransformerPRM
from fluxprm.models.weights import read_tensors

SEPARATOR = "<extra_0>"


class QwenPRM(TransformerPRM):
    format = "qwen-prm"
    default_aggregate = "mean"

    def __init__(self, backbone: nn.Module, tokenizer: Any, score_head: nn.Module, *,
                 system_prompt: str | None = None, **kw: Any):
        super().__init__(backbone, tokenizer, **kw)
        self.score_head = score_head.eval()
        self.system_prompt = system_prompt
        sep_id = separator_id(tokenizer)
        if sep_id is None:
            raise ValueError(f"tokenizer of {self.name} has no {SEPARATOR} token: not a qwen-prm checkpoint")
        self.separator_id = sep_id

    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        return qwen_prm_layout(self.tokenizer, self.separator_id, problem, steps, self.system_prompt)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.score_head(hidden.to(next(self.score_head.parameters()).dtype)).float()
        return torch.softmax(logits, dim=-1)[:, 1]


def separator_id(tokenizer: Any) -> int | None:
    """The id of ``<extra_0>`` in ``tokenizer``, read from it (checkpoints differ), or None."""
    sep = tokenizer.convert_tokens_to_ids(SEPARATOR)
    return None if sep is None or sep == tokenizer.unk_token_id else int(sep)


def qwen_prm_layout(tokenizer: Any, sep_id: int, problem: str, steps: list[str],
                    system_prompt: str | None) -> tuple[list[int], list[int]]:
    """Token ids of the model-card chat and the positions of its separators (one per step).

    A literal separator inside the text is removed first, so every separator token in the input is
    one of ours and step counts stay exact.
    """
    problem = problem.replace(SEPARATOR, "")
    clean = [s.replace(SEPARATOR, "") for s in steps]
    messages = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": problem})
    messages.append({"role": "assistant", "content": SEPARATOR.join(clean) + SEPARATOR})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    positions = [i for i, t in enumerate(ids) if t == sep_id]
    if len(positions) != len(steps):  # e.g. a system prompt that mentions the separator
        positions = positions[len(positions) - len(steps):] if steps else []
    return ids, positions


class QwenStepHead(nn.Module):
    """The qwen-prm head trained as a binary logit: sigmoid(l1 − l0) = softmax(l)[1]."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = make_score_head(hidden_size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.score(x)
        return logits[..., 1] - logits[..., 0]


def make_score_head(hidden_size: int, num_labels: int = 2) -> nn.Sequential:
    """The head layout of Qwen2ForProcessRewardModel (indices 0 and 2 carry the weights)."""
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_labels))


def _detect(folder: Path, config: dict[str, Any]) -> bool:
    return "ProcessRewardModel" in " ".join(config.get("architectures") or [])


def _load(req: LoadRequest) -> QwenPRM:
    state = read_tensors(req.folder, ("score.",))
    if not state:
        raise ValueError(f"{req.folder}: no 'score.*' weights: not a qwen-prm checkpoint")
    config, tokenizer, backbone = load_standard(req.folder, req.dtype, req.device)
    head = make_score_head(config.hidden_size, state["score.2.weight"].shape[0])
    head.load_state_dict({k.removeprefix("score."): v for k, v in state.items()})
    return QwenPRM(backbone, tokenizer, head.to(req.device, req.dtype), system_prompt=req.options.get("system_prompt"),
                   **req.common(config))


FORMAT = CheckpointFormat("qwen-prm", _detect, _load, "chat + <extra_0> separators, P(class 1) of a 2-way head")
