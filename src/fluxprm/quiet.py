"""Loading weights without transformers' progress bars.

transformers 5 draws a "Loading weights" bar per ``from_pretrained``; in a log (``nohup``, CI) each is a run of
carriage returns, and it interleaves with fluxprm's own progress lines. Every place fluxprm loads weights
(the PRM backbone, the judge LLM, the sentence encoder) goes through :func:`no_loading_bars`. Warnings and
errors are untouched: a broken checkpoint still says so.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["no_loading_bars"]


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """transformers' progress bars off inside the block, back as they were after it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
