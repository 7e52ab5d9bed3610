"""Ingest: native dataset folders -> region clips and clip records in a store.

``datasets/`` reads each dataset's folders and sheets, ``decode`` reads frames, ``faces``
finds the face and its landmarks, ``regions`` plans the six cuts, and ``pipeline`` runs it all
clip by clip into a store.
"""

from roi_store.ingest.pipeline import IngestReport, ingest

__all__ = ["IngestReport", "ingest"]
