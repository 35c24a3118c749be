"""Where a model lives: a registry name, a local folder or a hub id → a local folder (never remote code)."""

from __future__ import annotations

import os
from pathlib import Path

from fluxprm.models.bundled import bundled_model_dir
from fluxprm.models.registry import REGISTRY, ModelEntry, lookup

__all__ = ["DEFAULT_MODEL", "ModelNotFound", "resolve_model"]

DEFAULT_MODEL = "fluxprm-mini"


class ModelNotFound(FileNotFoundError):
    """No local folder, registry name or reachable hub id matches; the message says what to do."""


def resolve_model(name_or_path: str) -> tuple[Path, ModelEntry | None]:
    """A local folder for ``name_or_path``: a folder as given, a registry name, or a hub id.

    Hub models come from the local Hugging Face cache; they are downloaded only where the hub is
    reachable and ``HF_HUB_OFFLINE`` is unset. The error says exactly what to do otherwise.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    if _names_a_path(name_or_path):  # the hub would only answer "invalid repo id": say what is really wrong
        raise ModelNotFound(f"model {name_or_path} is a file, not a model folder" if path.exists()
                            else f"model folder {name_or_path} does not exist")
    entry = lookup(name_or_path)
    if entry and entry.bundled:
        return bundled_model_dir(entry.bundled), entry
    hub_id = entry.hub_id if entry else name_or_path
    if not hub_id or "/" not in hub_id:
        known = ", ".join(sorted(REGISTRY))
        raise ModelNotFound(f"model {name_or_path!r} is neither a folder nor a known name ({known}) nor a hub id")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        folder = snapshot_download(hub_id, local_files_only=offline,
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.pt",
                                                   "*.tiktoken", "*.jinja"])
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same actionable message
        # ``org/name`` is also a relative path: when ``org/`` is a local folder the user may have meant one
        neither = (f" There is no folder {name_or_path} either."
                   if entry is None and path.parent != Path(".") and path.parent.is_dir() else "")
        raise ModelNotFound(
            f"model {name_or_path!r} (hub id {hub_id}) is not in the local Hugging Face cache and could not be "
            f"downloaded ({type(exc).__name__}). Download it where the hub is reachable "
            f"(`huggingface-cli download {hub_id} --local-dir DIR`) and pass DIR instead.{neither}") from exc
    return Path(folder), entry


def _names_a_path(spec: str) -> bool:
    """Whether ``spec`` can only be a file-system path, never a registry name or a hub id (``org/name``).

    Hub ids are exactly two names joined by one ``/``; a spec starting with ``.``, ``/`` or ``~``, ending with a
    separator, holding a backslash separator or several ``/``, or naming a drive is a path the user typed.
    """
    seps = tuple(s for s in (os.sep, os.altsep, "/") if s)
    if spec in (".", "..") or spec.startswith(("~", *seps)) or spec.endswith(seps):
        return True
    if spec.startswith(tuple(f"{dots}{s}" for dots in (".", "..") for s in seps)):
        return True
    if any(s in spec for s in seps if s != "/") or spec.count("/") > 1:
        return True
    return bool(Path(spec).drive)
