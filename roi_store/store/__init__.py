"""The store: its on-disk format, clip records and region arrays, runs, locks, checks and copies.

Everything that reads or writes the Zarr hierarchy lives here; the stages above it (ingest,
method, evaluation) go through :class:`~roi_store.store.store.Store` and
:mod:`roi_store.store.runs`. The format is specified in ``schemas/FORMAT.rst``.
"""
