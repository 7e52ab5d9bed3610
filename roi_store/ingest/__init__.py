"""Ingest: native dataset folders -> region clips and clip records in a store.

``datasets/`` reads each dataset's folders and sheets, ``decode`` reads frames, ``faces``
finds the face and its landmarks, ``regions`` plans the six cuts, and ``pipeline`` runs it all
clip by clip into a store.
"""

__all__ = ["IngestReport", "ingest"]


def __getattr__(name: str):
    # The pipeline (OpenCV, the face models) loads on first use: importing a dataset reader, as
    # ``import roi_store`` does to register the datasets' id spellings, must stay light.
    if name in __all__:
        from roi_store.ingest import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
