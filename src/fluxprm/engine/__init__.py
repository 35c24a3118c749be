"""The scoring engine, one module per job (import the module you need; this package imports nothing itself,
so ``fluxprm.engine.options`` loads without torch):

- :mod:`fluxprm.engine.options` — ``ScoreOptions``, every knob of scoring, declared once (the CLI is generated from it);
- :mod:`fluxprm.engine.fit` — fitting a trace into the context: truncate, windows, or auto;
- :mod:`fluxprm.engine.batching` — one trace per forward vs padded batches, chosen by measurement;
- :mod:`fluxprm.engine.score` — ``score_batch`` (the batch API the job, the reward server and Ray workers call),
  ``score_stream`` and ``score_traces``.
"""
