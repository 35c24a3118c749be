"""``token-classification``: PRMs trained with TRL's PRMTrainer (``AutoModelForTokenClassification``).

Layout (TRL ``PRMTrainer.tokenize_row``): BOS (if the tokenizer has one) and the prompt ids, then each
step's ids followed by the separator's ids, every piece tokenized on its own without special tokens;
the label of a step sits on the last token of (step + separator), i.e. on the separator. The reward
is softmax(logits)[1] there. The separator is configurable (TRL's default ``"\\n"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fluxprm.models.backbone import load_standard
from fluxprm.models.base import CheckpointFormat, LoadRequest, TransformerPRM
from fluxprm.models.weights import linear_from, read_tensors


class TokenClassificationPRM(TransformerPRM):
    format = "token-classification"
    default_aggregate = "min"

    def __init__(self, backbone: nn.Module, tokenizer: Any, classifier: nn.Module, *,
                 separator: str = "\n", **kw: Any):
        super().__init__(backbone, tokenizer, **kw)
        self.classifier = classifier.eval()
        self.separator = separator
        self._sep_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]

    def encode_ids(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids = list(tok(problem, add_special_tokens=False)["input_ids"])
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        pieces = tok(steps, add_special_tokens=False)["input_ids"] if steps else []
        positions = []
        for piece in pieces:
            ids.extend(piece + self._sep_ids)
            positions.append(len(ids) - 1)
        return ids, positions

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = next(self.classifier.parameters())
        logits = self.classifier(hidden.to(weight.dtype)).float()
        return torch.softmax(logits, dim=-1)[:, 1]


def _detect(folder: Path, config: dict[str, Any]) -> bool:
    return "ForTokenClassification" in " ".join(config.get("architectures") or [])


def _load(req: LoadRequest) -> TokenClassificationPRM:
    state = read_tensors(req.folder, ("score.", "classifier."))
    prefix = "score." if "score.weight" in state else "classifier."
    if f"{prefix}weight" not in state:
        raise ValueError(f"{req.folder}: no 'score.weight' or 'classifier.weight': not a token-classification PRM")
    config, tokenizer, backbone = load_standard(req.folder, req.dtype, req.device)
    head = linear_from(state, prefix)
    return TokenClassificationPRM(backbone, tokenizer, head.to(req.device, req.dtype),
                                  separator=req.options.get("separator", "\n"), **req.common(config))


FORMAT = CheckpointFormat("token-classification", _detect, _load, "TRL PRMTrainer layout, softmax[1] at separators")
