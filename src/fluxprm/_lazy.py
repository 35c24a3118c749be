"""Package attributes imported on first use (PEP 562), so that importing a package costs nothing.

Why: ``fluxprm`` and several of its packages export names whose modules import torch (~7 s cold) or a peer
framework (TRL, verl). Commands that never need them (``select`` on a scores file, ``train --help``, a config
error) must not pay for them. A package declares ``_EXPORTS = {name: module}`` and::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: a name of ``exports`` is imported from its module when first
    read, then kept in the package's namespace (later reads are plain attribute lookups)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
