"""Loading weights without noise a fluxprm user cannot act on.

transformers 5 draws a "Loading weights" bar per ``from_pretrained``; in a log (``nohup``, CI) each is a run of
carriage returns, and it interleaves with fluxprm's own progress lines. Every place fluxprm loads weights
(the PRM backbone, the judge LLM, the sentence encoder, the one-time GGUF conversion of the embedded backbone)
goes through :func:`no_loading_bars`. Warnings and errors are untouched: a broken checkpoint still says so.

peft 0.21 reads transformers 5.23's deprecated ``is_gradient_checkpointing`` whenever it wraps a model, a
FutureWarning in every LoRA training run and every load of a LoRA checkpoint; :func:`peft_quietly` drops that
one warning and no other.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from types import ModuleType
from typing import Any, Iterator

__all__ = ["no_loading_bars", "peft_quietly"]


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """transformers' progress bars off inside the block, back as they were after it.

    The GGUF reader draws its "Converting and de-quantizing" bar with tqdm directly, past transformers' switch,
    so its module's ``tqdm`` is swapped for a silent one for the block (a new user's first ``make demo`` showed it).
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_module, gguf_tqdm = _gguf_reader_tqdm()
    if gguf_module is not None:
        gguf_module.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_module is not None:
            gguf_module.tqdm = gguf_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()


def _gguf_reader_tqdm() -> tuple[ModuleType | None, Any]:
    """transformers' GGUF reader module and its ``tqdm``, or ``(None, None)`` where this transformers has neither."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_module
    except ImportError:
        return None, None
    bar = getattr(gguf_module, "tqdm", None)
    return (gguf_module, bar) if callable(bar) else (None, None)


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Inside the block, peft's use of transformers' deprecated ``is_gradient_checkpointing`` warns no more."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.* is deprecated", FutureWarning)
        yield
