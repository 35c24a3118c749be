"""``fluxprm view``: a self-contained HTML page of scored traces, each step coloured by its reward.

``build_page(scores, out, traces=..., labels=..., options=ViewOptions())`` writes the page and returns a
:class:`ViewReport` (counts and the notes shown on the page: missing matches, what the page-size guard left
out). Imports no torch: a scores file is all it needs.
"""

from fluxprm.view.data import Note
from fluxprm.view.options import DEFAULT_MAX_BYTES, ViewOptions
from fluxprm.view.page import ViewReport, build_page

__all__ = ["ViewOptions", "ViewReport", "Note", "build_page", "DEFAULT_MAX_BYTES"]
