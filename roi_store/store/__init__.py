"""The store: its on-disk format, clip records and region arrays, runs, locks, checks and copies.

Everything that reads or writes the Zarr hierarchy lives here; the stages above it (ingest,
method, evaluation) go through :class:`~roi_store.store.store.Store` and
:mod:`roi_store.store.runs` (with :mod:`roi_store.store.run_data`). The format is specified in
``schemas/FORMAT.rst``.
"""
