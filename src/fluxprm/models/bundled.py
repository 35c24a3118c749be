"""Models that ship inside the package (``fluxprm/data/<name>``): small trained heads, no backbone copy."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_model_dir(name: str) -> Path:
    """Folder of a bundled model; the error names the package file that is missing."""
    folder = Path(str(resources.files("fluxprm") / "data" / name))
    if not (folder / "fluxprm_config.json").is_file():
        raise FileNotFoundError(f"bundled model {name!r} is missing from the installed package ({folder}); "
                                "reinstall fluxprm")
    return folder
