"""fluxprm: trajectory-aware process reward models for thinking traces."""

__version__ = "0.1.0"
