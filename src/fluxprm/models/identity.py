"""What a model folder holds, as a short hash: part of a run's identity (``--resume``, eval's score cache).

A model is named by its folder, and the name stays when ``fluxprm train -o my-prm`` runs again; the files do
not. Torch-free, so checking a cached score file costs no model import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["folder_fingerprint"]

# Files of a model folder that hold no weights or settings: editing a model card must not block a resume.
_NOT_MODEL_FILES = (".md", ".png", ".jpg", ".lock")


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """What a model folder holds now: each file's relative path, size and mtime (ns), hashed.

    A checkpoint retrained into the same folder changes it, so a ``--resume`` or a cached score file is never
    completed with another model's scores; contents are not read, so a multi-GB checkpoint costs a stat per file.
    A model's name alone cannot tell: it is the folder's name, the same for every retraining.
    """
    root = Path(folder)
    h = hashlib.sha256(os.fsencode(str(root.resolve())))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(_NOT_MODEL_FILES):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # a dangling link: nothing to load from it either
                continue
            h.update(os.fsencode(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n"))
    return h.hexdigest()[:32]
