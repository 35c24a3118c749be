"""``fluxprm label`` as a library call: traces in, one teacher-reward record per trace out.

Mirrors :mod:`fluxprm.score_job`: input is streamed in chunks of ``chunk_size`` traces, records come out
in input order, rejected records go to the errors file, and output is crash-safe and resumable through
:class:`fluxprm.outputs.ResumableWriter` (a resumed run equals an uninterrupted one byte for byte).

Per chunk: segment every trace with :func:`fluxprm.steps.prepare` (the same segmentation ``fluxprm
score`` uses, so labels line up with scored steps); encode all texts of the chunk in one encoder call;
compute alignment and coherence; score every thinking step with the judge; run the template-guided
rollouts; fuse. Coherence negatives come from a pool sampled over the whole run in a first pass
(:class:`fluxprm.labels.coherence.NegativePool`), so they do not depend on chunking or resuming.

Record (one JSON line per trace)::

    {"id", "problem", "thinking_steps", "response_steps",
     "step_rewards": [r_step per thinking step, then null per response step],
     "components": {"alignment": [...], "quality": [...], "coherence": [exp(r_coh)...],
                    "coherence_logp": [r_coh...], "weights": [[w_align, w_qual, w_coh] | null ...]},
     "step_labels": [null per thinking step, then the trace's hard labels of its response steps] | null,
     "trajectory_reward": float | null, "rollouts": {"n", "correct"} | null, "correct", "gold", "source",
     "line", "label_config": "<12-hex hash of the options that shape the labels>",
     "judge_prompt": "v2" | "v1" | null (no judge), "notes": [...]}

Component lists always have one entry per thinking step (``null`` where the component is switched off or
missing). Floats are rounded to 6 decimals. ``notes`` (an extension of the schema) says why values are
missing (no response to align with, no gold answer, unparseable judge output, …).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from dataclasses import asdict, dataclass, field, fields as dc_fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import orjson


from fluxprm.distributed import RayOptions  # imports neither Ray nor torch
from fluxprm.labels.alignment import alignment_rewards
from fluxprm.labels.coherence import NegativePool, coherence_rewards, collect_negative_pool
from fluxprm.labels.fuse import fuse_steps
from fluxprm.labels.quality import JUDGE_PROMPTS, JudgeTrace, build_judge_prompt, load_prompt, make_judge
from fluxprm.labels.trajectory import TEMPLATE_EXTRACT, TEMPLATE_SOLVE, TrajectoryItem, TrajectoryRewarder
from fluxprm.jobs import JobFailure, JobResult, run_job
from fluxprm.records import BadRecord
from fluxprm.steps import PRMInput, StepConfig, prepare
from fluxprm.traces import FieldMap, Trace, TraceError, iter_traces

__all__ = ["LabelConfig", "LabelStats", "LabelJobResult", "LabelFailure", "Labeler", "run_label_job",
           "label_config_hash"]

logger = logging.getLogger(__name__)

LABEL_SCHEMA_VERSION = 1
_DIGITS = 6


# How the coherence component enters the fusion: its contrastive probability exp(r_coh), or r_coh itself
COHERENCE_FUSIONS = ("probability", "logp")

LabelFailure = JobFailure  # a record could not be labelled and ``on_error`` is not ``skip``


@dataclass
class LabelConfig:
    """Every knob of ``fluxprm label``; each field has a CLI flag of the same name (``--no-alignment``,
    ``--no-coherence``, ``--no-judge`` for the switches; ``steps`` fields as in ``fluxprm score``)."""

    steps: StepConfig = field(default_factory=StepConfig, metadata={
        "help": "Segmentation of free text, as in `fluxprm score` (so labels line up with scored steps)."})
    # encoder components
    encoder: str | None = field(default=None, metadata={
        "help": "Sentence encoder Φ for alignment and coherence: a sentence-transformers folder or name "
                "(default: all-MiniLM-L6-v2, bundled, offline)."})
    alignment: bool = field(default=True, metadata={
        "help": "Alignment reward: cosine between each thinking step and the response step it is aligned with; "
                "off drops it from the fusion."})
    coherence: bool = field(default=True, metadata={
        "help": "Coherence reward: contrastive log-prob r_coh of step t following step t-1 (the problem for "
                "t=1) against --negatives steps of other traces; off drops it."})
    coherence_fusion: str = field(default="probability", metadata={
        "choices": COHERENCE_FUSIONS,
        "help": "What coherence puts into the softmax fusion. probability: exp(r_coh) in [0, 1], so a step "
                "predictable from the one before raises its reward. logp: r_coh <= 0 itself, so a predictable "
                "step adds a zero with a large weight and lowers it (on long thinking traces this ranks "
                "correct traces up, see docs/LABEL.md). Records keep both values."})
    tau: float = field(default=0.1, metadata={"help": "Coherence temperature τ."})
    negatives: int = field(default=16, metadata={"help": "Coherence negatives k per step, from other traces."})
    negative_pool: int = field(default=4096, metadata={
        "help": "Run-wide reservoir of thinking steps the negatives are drawn from."})
    # quality component
    judge: str | None = field(default="smollm2", metadata={
        "help": "Quality reward judge: smollm2 (embedded, local, reads the log-probs of 0-10 in one forward), a "
                "local model folder, http://host:port/v1#model or openai:model (parses 'Score: N'; unparseable "
                "answers are retried, then recorded as missing)."})
    judge_retries: int = field(default=2, metadata={"help": "Retries of unparseable judge answers."})
    judge_max_tokens: int = field(default=256, metadata={"help": "Answer budget of an HTTP judge, in tokens."})
    judge_retry_temperature: float = field(default=0.7, metadata={
        "help": "Sampling temperature of judge retries (the first try is greedy)."})
    judge_prompt: str = field(default="v2", metadata={
        "help": "Judge prompt. v2: problem and response first, then the thinking steps up to the graded one, "
                "then a short question, so the queries of one trace share their prefix (a local judge grows one "
                "KV cache per trace; servers' prefix caches hit). v1: the original per-step prompt (reproduces "
                "old label files)."})
    judge_context_chars: int | None = field(default=None, metadata={
        "help": "Earlier steps the judge sees, in characters, most recent first: v1 shows those that fit in "
                "this many (default 2000); v2 restarts its view from those that fit in it (default 1000)."})
    judge_window_chars: int = field(default=6000, metadata={
        "help": "v2: earlier steps in view grow up to this many characters, then restart from the last "
                "--judge-context-chars of them (bounds the judge's context on long traces)."})
    judge_text_chars: int = field(default=1500, metadata={
        "help": "Cap on the problem, the step and the response in a judge prompt (head and tail kept)."})
    # trajectory reward
    policy: str | None = field(default=None, metadata={
        "help": "Trajectory reward: the policy LLM that solves each problem --rollouts times guided by a "
                "template the expert extracted; reward = fraction graded correct against the gold answer. Off "
                "unless given. Same forms as --judge."})
    expert: str | None = field(default=None, metadata={
        "help": "LLM that extracts the reasoning template (default: the --policy model)."})
    rollouts: int = field(default=8, metadata={"help": "Policy rollouts per trace (seeds seed .. seed+N-1)."})
    rollout_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of rollouts."})
    rollout_max_tokens: int = field(default=1024, metadata={"help": "Token budget of one rollout."})
    template_max_tokens: int = field(default=512, metadata={"help": "Token budget of the expert's template."})
    template_thinking_chars: int = field(default=12000, metadata={
        "help": "Cap on the thinking text shown to the expert (head and tail kept)."})
    # run
    seed: int = field(default=0, metadata={"help": "Seed of negatives, judge retries and rollouts."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto, for the encoder and local LLMs."})
    encoder_batch_size: int = field(default=64, metadata={"help": "Texts per encoder forward."})
    cache: str | None = field(default=None, metadata={
        "help": "LLM cache file (SQLite); reruns and resumes reuse it (default: "
                "~/.cache/fluxprm/llm-cache.sqlite)."})
    chunk_size: int = field(default=16, metadata={
        "help": "Traces per chunk (encoder batch and checkpoint interval)."})
    # "raise", the library's default, acts as "fail"; the CLI offers skip|fail only (ON_ERROR_CLI), so the help
    # describes those two, as ScoreOptions.on_error's does
    on_error: str = field(default="raise", metadata={
        "help": "Bad records. skip: write them to the errors file and go on; fail: stop at the first one "
                "(exit 1) after writing every record before it."})

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {self.negatives}")
        if self.rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {self.rollouts}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.coherence_fusion not in COHERENCE_FUSIONS:
            raise ValueError(f"coherence_fusion must be one of {', '.join(COHERENCE_FUSIONS)}, "
                             f"got {self.coherence_fusion!r}")
        if self.judge_prompt not in JUDGE_PROMPTS:
            raise ValueError(f"judge_prompt must be one of {', '.join(JUDGE_PROMPTS)}, got {self.judge_prompt!r}")
        if self.judge_window_chars < self.judge_context:
            raise ValueError(f"judge_window_chars ({self.judge_window_chars}) must be >= judge_context_chars "
                             f"({self.judge_context})")
        if self.on_error not in ("raise", "skip", "fail"):
            raise ValueError(f"on_error must be raise, skip or fail, got {self.on_error!r}")

    @property
    def judge_context(self) -> int:
        """``judge_context_chars``, or its default for the prompt: 2000 for v1 (as it always was), 1000 for v2
        (where a restarted view begins; it then grows up to ``judge_window_chars``)."""
        if self.judge_context_chars is not None:
            return self.judge_context_chars
        return 2000 if self.judge_prompt == "v1" else 1000

    @property
    def uses_encoder(self) -> bool:
        return self.alignment or self.coherence


# Fields that change no label value (where and how fast the run happens, what happens to bad records).
_RUN_ONLY = {"device", "encoder_batch_size", "cache", "chunk_size", "on_error"}
# Fields added after label files existed, with their defaults: left out of a run's hash and resume identity
# while they hold them, so the labels and runs of the defaults keep the identity they had before.
_ADDED_LATER = {"coherence_fusion": "probability"}


def _without_later_defaults(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


def _output_options(config: LabelConfig) -> dict[str, Any]:
    opts = _without_later_defaults({f.name: getattr(config, f.name) for f in dc_fields(config)
                                    if f.name not in _RUN_ONLY})
    opts["steps"] = asdict(config.steps)
    if not config.coherence:
        for k in ("tau", "negatives", "negative_pool", "coherence_fusion"):
            opts.pop(k, None)
    if config.judge is None:
        for k in list(opts):
            if k.startswith("judge_"):
                opts.pop(k)
    else:
        opts["judge_context_chars"] = config.judge_context
        if config.judge_prompt == "v1":  # v1's options, hence its hash, are what they were before v2 existed
            opts.pop("judge_window_chars")
            opts.pop("judge_prompt")
    if config.policy is None:
        for k in ("expert", "rollouts", "rollout_temperature", "rollout_max_tokens", "template_max_tokens",
                  "template_thinking_chars"):
            opts.pop(k)
    if not config.uses_encoder:
        opts.pop("encoder")
    prompts = [JUDGE_PROMPTS[config.judge_prompt]] * (config.judge is not None) + [TEMPLATE_EXTRACT, TEMPLATE_SOLVE] * (config.policy is not None)
    opts["prompts"] = {name: hashlib.sha256(load_prompt(name).encode()).hexdigest()[:16] for name in prompts}
    opts["schema"] = LABEL_SCHEMA_VERSION
    return opts


def label_config_hash(config: LabelConfig) -> str:
    """Short identity of the options (and prompt texts) that shape the labels; same hash → comparable labels."""
    blob = orjson.dumps(_output_options(config), option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class LabelStats:
    traces: int = 0
    thinking_steps: int = 0
    response_steps: int = 0
    errors: int = 0
    quality_missing: int = 0
    judged_steps: int = 0
    rollouts: int = 0
    pool_steps: int = 0
    pool_seconds: float = 0.0
    encode_seconds: float = 0.0
    judge_seconds: float = 0.0
    trajectory_seconds: float = 0.0


@dataclass
class LabelJobResult(JobResult):
    stats: LabelStats


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), _DIGITS)


def _round_list(xs: Sequence[float | None]) -> list[float | None]:
    return [_round(x) for x in xs]


def _label_value(x: float | None) -> float | int | None:
    if x is None:
        return None
    return int(x) if float(x).is_integer() else x


def _step_labels(trace: Trace, inp: PRMInput) -> list[float | int | None] | None:
    """The trace's hard labels (they belong to its explicit ``steps`` = response steps) in reading order."""
    if trace.step_labels is None or trace.steps is None:
        return None
    labels = [lab for text, lab in zip(trace.steps, trace.step_labels) if text.strip()]
    if len(labels) != len(inp.response_steps):
        return None
    return [None] * len(inp.thinking_steps) + [_label_value(x) for x in labels]


def _llm_kwargs(spec: str, device: str) -> dict[str, Any]:
    return {} if spec.startswith(("http://", "https://", "openai:")) else {"device": device}


class Labeler:
    """Holds the loaded models of a label run and labels one chunk at a time.

    Models load on first use from ``config`` unless given: ``encoder`` (an object with ``encode(texts) ->
    (n, d) array``), ``judge_llm``, ``policy_llm``, ``expert_llm`` (:mod:`fluxprm.llm` objects).
    """

    def __init__(self, config: LabelConfig, *, encoder: Any = None, judge_llm: Any = None, policy_llm: Any = None,
                 expert_llm: Any = None, stats: LabelStats | None = None):
        self.config = config
        self.stats = stats or LabelStats()
        self._encoder, self._judge_llm, self._policy_llm, self._expert_llm = encoder, judge_llm, policy_llm, expert_llm
        self._judge = None
        self._rewarder: TrajectoryRewarder | None = None
        self._cache = None
        self.pool: NegativePool | None = None
        self.config_hash = label_config_hash(config)
        self._judge_template = load_prompt(JUDGE_PROMPTS[config.judge_prompt])
        # Told what the chunk in hand is doing ("judge 120/262 steps"): a chunk of 16 long traces can take ten
        # minutes, and progress counted in records alone would stand still that long.
        self.on_detail: Callable[[str], None] | None = None

    # -- lazily loaded parts

    @property
    def cache(self):
        if self._cache is None:
            from fluxprm.llm import LLMCache

            self._cache = LLMCache(self.config.cache)
        return self._cache

    @property
    def encoder(self):
        if self._encoder is None:
            from fluxprm.labels.encoder import Encoder

            self._encoder = Encoder(self.config.encoder, device=self.config.device,
                                    batch_size=self.config.encoder_batch_size)
        return self._encoder

    def _load(self, spec: str):
        from fluxprm.llm import load_llm

        return load_llm(spec, cache=self.cache, **_llm_kwargs(spec, self.config.device))

    def check_backends(self) -> list[str]:
        """Load every LLM the run needs now, and ask each HTTP server once whether it answers.

        A spec that cannot be loaded (``--policy notaurl``) raises ``ValueError`` naming the option before
        any work is done. An unreachable server is a warning, not a failure: a rerun can be served entirely
        from the LLM cache; the first uncached call then fails with an ``LLMError`` naming the URL.
        """
        from fluxprm.llm import OpenAICompatLLM

        warnings: list[str] = []
        c = self.config
        for flag, spec, attr in (("--judge", c.judge, "_judge_llm"), ("--policy", c.policy, "_policy_llm"),
                                 ("--expert", c.expert if c.expert != c.policy else None, "_expert_llm")):
            if spec is None or getattr(self, attr) is not None:
                continue
            try:
                llm = self._load(spec)
            except Exception as exc:  # noqa: BLE001 - any load failure becomes one message naming the option
                raise ValueError(f"{flag} {spec}: {exc}") from None
            setattr(self, attr, llm)
            if isinstance(llm, OpenAICompatLLM) and (problem := llm.ping()) is not None:
                warnings.append(f"{flag} {spec}: {problem}; records whose answers are not in the LLM cache will fail")
        for w in warnings:
            logger.warning(w)
        return warnings

    @property
    def judge(self):
        if self._judge is None and self.config.judge is not None:
            llm = self._judge_llm if self._judge_llm is not None else self._load(self.config.judge)
            c = self.config
            self._judge = make_judge(llm, retries=c.judge_retries, max_tokens=c.judge_max_tokens,
                                     retry_temperature=c.judge_retry_temperature, seed=c.seed)
        return self._judge

    @property
    def rewarder(self) -> TrajectoryRewarder | None:
        c = self.config
        if self._rewarder is None and c.policy is not None:
            policy = self._policy_llm if self._policy_llm is not None else self._load(c.policy)
            if self._expert_llm is not None:
                expert = self._expert_llm
            elif c.expert is None or c.expert == c.policy:
                expert = policy
            else:
                expert = self._load(c.expert)
            self._rewarder = TrajectoryRewarder(policy, expert, rollouts=c.rollouts, temperature=c.rollout_temperature,
                                                max_tokens=c.rollout_max_tokens,
                                                template_max_tokens=c.template_max_tokens,
                                                thinking_chars=c.template_thinking_chars, seed=c.seed)
        return self._rewarder

    # -- the run-wide negative pool

    def build_pool(self, items: Iterable[tuple[int, Trace | BadRecord]]) -> NegativePool:
        """First pass: reservoir-sample thinking steps of every trace, then embed them (one encode call)."""
        start = time.perf_counter()
        pool = collect_negative_pool(items, self.config)
        pool.embed(self.encoder)
        self.pool = pool
        self.stats.pool_steps = len(pool)
        self.stats.pool_seconds += time.perf_counter() - start
        return pool

    # -- one chunk

    def label_chunk(self, chunk: Sequence[tuple[int, Trace | BadRecord]]) -> list[dict[str, Any] | BadRecord]:
        """Label ``(item_index, trace)`` pairs; one record dict or ``BadRecord`` per pair, in order."""
        c = self.config
        results: list[dict[str, Any] | BadRecord | None] = [None] * len(chunk)
        work: list[tuple[int, int, Trace, PRMInput]] = []
        for slot, (index, item) in enumerate(chunk):
            if isinstance(item, BadRecord):
                results[slot] = item
                continue
            try:
                work.append((slot, index, item, prepare(item, c.steps)))
            except (TraceError, ValueError) as exc:
                results[slot] = BadRecord(item.source, item.line, str(exc), item.id)

        n = len(work)
        notes: list[list[str]] = [[] for _ in range(n)]
        align: list[list[float | None]] = [[None] * len(w[3].thinking_steps) for w in work]
        coh_p = [list(a) for a in align]
        coh_lp = [list(a) for a in align]
        qual = [list(a) for a in align]

        detail = self.on_detail or (lambda text: None)
        if c.uses_encoder and work:
            start = time.perf_counter()
            detail(f"encoding {sum(len(inp.thinking_steps) + len(inp.response_steps) for *_, inp in work)} steps")
            vectors = self._encode_chunk(work)
            for j, (_, index, _, inp) in enumerate(work):
                think = vectors(inp.thinking_steps)
                if c.alignment and inp.thinking_steps:
                    align[j] = alignment_rewards(think, vectors(inp.response_steps))
                    if not inp.response_steps:
                        notes[j].append("alignment: no response steps (the trace was cut off)")
                if c.coherence and inp.thinking_steps:
                    negs = self._negatives(index, len(inp.thinking_steps))
                    coh_lp[j], coh_p[j] = coherence_rewards(vectors([inp.problem])[0], think, negs, c.tau)
                    if all(x is None for x in coh_lp[j]):
                        notes[j].append("coherence: no negatives (no other trace in the run has thinking steps)")
            self.stats.encode_seconds += time.perf_counter() - start

        if self.judge is not None:
            start = time.perf_counter()
            judging = sum(len(inp.thinking_steps) for *_, inp in work)
            judged_so_far = 0

            def on_steps(n: int) -> None:
                nonlocal judged_so_far
                judged_so_far += n
                detail(f"judge {judged_so_far}/{judging} steps")

            detail(f"judge 0/{judging} steps")
            if c.judge_prompt == "v1":
                prompts, owners = [], []
                for j, (_, _, _, inp) in enumerate(work):
                    response = "\n\n".join(inp.response_steps)
                    for t in range(len(inp.thinking_steps)):
                        prompts.append(build_judge_prompt(inp.problem, inp.thinking_steps, t, response,
                                                          self._judge_template, c.judge_context,
                                                          c.judge_text_chars))
                        owners.append((j, t))
                for (j, t), s in zip(owners, self.judge.score_prompts(prompts, on_steps) if prompts else []):
                    qual[j][t] = s
                judged = len(prompts)
            else:
                traces = [JudgeTrace.build(inp.problem, inp.thinking_steps, "\n\n".join(inp.response_steps),
                                           self._judge_template, c.judge_context, c.judge_window_chars,
                                           c.judge_text_chars) for _, _, _, inp in work]
                for j, scores in enumerate(self.judge.score_traces(traces, on_steps)):
                    qual[j] = list(scores)
                judged = sum(len(t) for t in traces)
            for j in range(n):
                missing = [t + 1 for t, s in enumerate(qual[j]) if s is None]
                if missing:
                    notes[j].append(f"quality: no usable judge score for step(s) {missing}")
                    self.stats.quality_missing += len(missing)
            self.stats.judged_steps += judged
            self.stats.judge_seconds += time.perf_counter() - start

        trajectories = [None] * n
        if self.rewarder is not None and work:
            start = time.perf_counter()
            detail(f"rollouts for {len(work)} traces")
            items = [TrajectoryItem(inp.problem, "\n\n".join(inp.thinking_steps), "\n\n".join(inp.response_steps),
                                    trace.gold) for _, _, trace, inp in work]
            trajectories = self.rewarder.run(items)
            for j, tr in enumerate(trajectories):
                if tr.note:
                    notes[j].append(f"trajectory: {tr.note}")
                self.stats.rollouts += tr.n
            self.stats.trajectory_seconds += time.perf_counter() - start

        for j, (slot, _, trace, inp) in enumerate(work):
            if not inp.thinking_steps:
                notes[j].append("no thinking steps: step-level teacher rewards cover thinking steps only")
            results[slot] = self._record(trace, inp, align[j], qual[j], coh_p[j], coh_lp[j], trajectories[j], notes[j])
            self.stats.traces += 1
            self.stats.thinking_steps += len(inp.thinking_steps)
            self.stats.response_steps += len(inp.response_steps)
        self.stats.errors += sum(isinstance(r, BadRecord) for r in results)
        detail("")
        return results  # type: ignore[return-value]

    def _encode_chunk(self, work: list[tuple[int, int, Trace, PRMInput]]) -> Callable[[Sequence[str]], np.ndarray]:
        """Encode every distinct text of the chunk in one call; return a lookup ``texts -> (n, d)``."""
        texts: dict[str, int] = {}
        for _, _, _, inp in work:
            for t in itertools.chain([inp.problem], inp.thinking_steps, inp.response_steps):
                texts.setdefault(t, len(texts))
        emb = self.encoder.encode(list(texts))

        def vectors(items: Sequence[str]) -> np.ndarray:
            return emb[[texts[t] for t in items]] if items else emb[:0]

        return vectors

    def _negatives(self, index: int, num_steps: int) -> list[np.ndarray | None]:
        if self.pool is None:
            raise RuntimeError("coherence needs the run-wide negative pool: call Labeler.build_pool(items) first")
        return self.pool.negatives(index, num_steps, self.config.negatives)

    def _record(self, trace: Trace, inp: PRMInput, align: list, qual: list, coh_p: list, coh_lp: list,
                trajectory: Any, notes: list[str]) -> dict[str, Any]:
        rewards, weights = fuse_steps(align, qual, coh_lp if self.config.coherence_fusion == "logp" else coh_p)
        return {
            "id": trace.id,
            "problem": inp.problem,
            "thinking_steps": inp.thinking_steps,
            "response_steps": inp.response_steps,
            "step_rewards": _round_list(rewards) + [None] * len(inp.response_steps),
            "components": {
                "alignment": _round_list(align),
                "quality": _round_list(qual),
                "coherence": _round_list(coh_p),
                "coherence_logp": _round_list(coh_lp),
                "weights": [None if w is None else _round_list(w) for w in weights],
            },
            "step_labels": _step_labels(trace, inp),
            "trajectory_reward": None if trajectory is None else _round(trajectory.reward),
            "rollouts": None if trajectory is None or trajectory.n == 0 else trajectory.rollouts_json(),
            "correct": trace.correct,
            "gold": trace.gold,
            "source": trace.source,
            "line": trace.line,
            "label_config": self.config_hash,
            "judge_prompt": None if self.config.judge is None else self.config.judge_prompt,
            "notes": notes,
        }


def _model_folders(config: LabelConfig) -> dict[str, str]:
    """The fingerprint of each model given as a local folder (judge, policy, expert, encoder): a model retrained into
    the same folder is another model, and a ``--resume`` must not finish the run with it."""
    from fluxprm.models.identity import folder_fingerprint

    specs = {"judge": config.judge, "policy": config.policy, "expert": config.expert, "encoder": config.encoder}
    return {role: folder_fingerprint(Path(spec).expanduser()) for role, spec in specs.items()
            if isinstance(spec, str) and Path(spec).expanduser().is_dir()}


def run_label_job(inputs: Sequence[str], out: Path | None, errors: Path | None, config: LabelConfig,
                  resume: bool = False, on_progress: Callable[[int], None] | None = None,
                  fields: FieldMap | None = None, labeler: Labeler | None = None,
                  cluster: RayOptions | None = None, threads: int | None = None) -> LabelJobResult:
    """Label every record of ``inputs``; each ends in ``out`` or in ``errors``, in input order.

    With ``out=None`` records go to stdout and rejected records to stderr (no resume possible).
    ``on_progress(n)`` is called after each chunk with the number of input records just finished; when it has
    a ``detail(text)`` method (the CLI's progress display), that is told what the chunk in hand is doing
    (``"judge 120/262 steps"``; ``""`` once the chunk is done). ``labeler`` reuses already loaded models (its
    config must be ``config``).

    With ``cluster.ray`` the chunks are labelled on a Ray Data actor pool (``cluster.workers`` actors, each with
    its own ``Labeler(config)`` and ``threads`` torch threads, default ``cluster.cpus_per_worker`` on CPUs; see
    :mod:`fluxprm.labels.distributed`); everything else — the files, their bytes, the checkpoint, resume — is
    this same job, so either kind of run resumes the other.
    """
    import contextlib
    import functools

    inputs = [str(p) for p in inputs]
    remote = cluster is not None and cluster.ray
    if remote and labeler is not None:
        raise ValueError("a Labeler holds models loaded in this process: with cluster.ray each actor builds its own")
    labeler = labeler or (None if remote else Labeler(config))
    if labeler is not None and labeler.config is not config:
        raise ValueError("the labeler was built for a different LabelConfig")
    identity = {"label": _without_later_defaults({k: v for k, v in asdict(config).items()
                                                  if k not in ("on_error", "cache")}),
                "fields": asdict(fields) if fields else None}
    if folders := _model_folders(config):  # only then: runs on registry, embedded or served models keep their id
        identity["model_folders"] = folders

    def read() -> Iterator[Trace | BadRecord]:
        return iter_traces(inputs, fields)

    with contextlib.ExitStack() as stack:
        if remote:
            from fluxprm.labels.distributed import RemoteLabeling

            assert cluster is not None
            stats = LabelStats()
            on_ray = stack.enter_context(RemoteLabeling(functools.partial(Labeler, config), config, cluster, read,
                                                        stats, threads))
            items, process = on_ray.items, on_ray.process
        else:
            assert labeler is not None
            local, stats, checked = labeler, labeler.stats, False
            if on_progress is not None and callable(getattr(on_progress, "detail", None)):
                stack.callback(setattr, local, "on_detail", local.on_detail)  # a reused labeler gets its own back
                local.on_detail = on_progress.detail  # type: ignore[attr-defined]

            def process(chunk: list[Trace | BadRecord], start: int) -> list[dict[str, Any] | BadRecord]:
                nonlocal checked
                if not checked:
                    local.check_backends()
                    checked = True
                if config.coherence and local.pool is None:
                    # Negatives come from a pool over the whole run, built once, so they do not depend on chunking.
                    if local.on_detail is not None:
                        local.on_detail("sampling coherence negatives from every trace")
                    local.build_pool(enumerate(read()))
                return local.label_chunk(list(enumerate(chunk, start)))

            items = read
        job = run_job(inputs, out, errors, identity=identity, items=items, process=process,
                      chunk_size=config.chunk_size, stats=stats, resume=resume, on_error=config.on_error,
                      on_progress=on_progress)
    return LabelJobResult(**vars(job))
