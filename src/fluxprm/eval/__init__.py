"""``fluxprm eval``: benchmark numbers for choosing a PRM, computed as the benchmarks' own code computes them.

One module per job: :mod:`.sources` (which models/score files, scoring and its cache in the report folder),
one module per task (:mod:`.prmbench`, :mod:`.processbench`, :mod:`.outcome`, :mod:`.separation`,
:mod:`.bontask`), :mod:`.report` (tables, Markdown, PNG) and :mod:`.tasks` (the registry of tasks by name).
Nothing here imports torch at module level: scoring with ``-m`` goes through :mod:`fluxprm.scored`.
"""

from fluxprm.eval.sources import EvalError, EvalSource
from fluxprm.eval.context import EvalOptions
from fluxprm.eval.tasks import TASKS, EvalResult, run_eval

__all__ = ["TASKS", "EvalOptions", "EvalResult", "EvalError", "EvalSource", "run_eval"]
