"""``python -m fluxprm`` = the ``fluxprm`` command."""

from fluxprm.cli import app

app()
