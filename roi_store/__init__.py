"""roistore: facial micro-expression datasets as region clips in a versioned, shareable Zarr store."""

from roi_store._version import __version__
from roi_store.errors import RoiStoreError
from roi_store.ids import ClipKey
from roi_store.store.store import ClipRecord, Store, open_store

__all__ = ["ClipKey", "ClipRecord", "RoiStoreError", "Store", "__version__", "open_store"]
