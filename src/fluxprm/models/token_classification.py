"""``token-classification``: PRMs trained with TRL's PRMTrainer (``AutoModelForTokenClassification``).

Layout (TRL ``PRMTrainer.tokenize_row``): BOS (if the tokenizer has one) and the prompt ids, then each
step's ids followed by the separator's ids, every piece tokenized on its own without special tokens;
the label of a step sits on the last token of (step + separator), i.e. on the separator. The reward
is softmax(logits)[1] there. The separator is configurable (TRL's default ``"\\n"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fluxprm.models.base import TransformerPRM


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
