"""Indicator signals over 1 s bars: one definition, a batch form and a streaming form.

* :mod:`.spec`: periods, readiness and output columns (the one definition).
* :mod:`.kernels`: the numeric kernels both forms call, so their values are bit-identical.
* :mod:`.batch`: :func:`~.batch.compute_signals` over a table of bars (offline).
* :mod:`.streaming`: :class:`~.streaming.SignalState`, updated once per batch of closed bars (live).
* :mod:`.pairs`: pair statistics on aligned closes.
* :mod:`.cli`: ``tickforge signals build``.

Nothing is imported here, so that the CLI starts without loading polars and scipy.
"""
