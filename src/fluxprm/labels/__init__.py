"""Teacher rewards of ReasonFlux-PRM (arXiv 2506.18896) for training a trajectory-aware PRM.

Per thinking step: alignment (:mod:`.alignment`), coherence (:mod:`.coherence`), quality by a judge LLM
(:mod:`.quality`), fused with a softmax over the components present (:mod:`.fuse`). Per trace: a
template-guided trajectory reward (:mod:`.trajectory`). :func:`run_label_job` (:mod:`.pipeline`) runs it
all over files, resumably; ``fluxprm label`` is its command line.
"""

from fluxprm.labels.alignment import alignment_rewards, cosine
from fluxprm.labels.coherence import NegativePool, coherence_logp, coherence_rewards
from fluxprm.labels.fuse import COMPONENTS, fuse, fuse_steps
from fluxprm.labels.pipeline import (LabelConfig, LabelFailure, LabelJobResult, Labeler, LabelStats,
                                     label_config_hash, run_label_job)
from fluxprm.labels.quality import build_judge_prompt, parse_score, score_from_logprobs

__all__ = ["alignment_rewards", "cosine", "NegativePool", "coherence_logp", "coherence_rewards", "COMPONENTS",
           "fuse", "fuse_steps", "LabelConfig", "LabelFailure", "LabelJobResult", "Labeler", "LabelStats",
           "label_config_hash", "run_label_job", "build_judge_prompt", "parse_score", "score_from_logprobs"]
