"""roistore: facial micro-expression datasets as region clips in a versioned, shareable Zarr store."""

import importlib.machinery as _machinery
import sys as _sys
from pathlib import Path as _Path

from roi_store._version import __version__
from roi_store.errors import RoiStoreError
from roi_store.ids import ClipKey
from roi_store.store.store import ClipRecord, Store, open_store
import roi_store.ingest.datasets  # noqa: E402,F401 -- registers each dataset's subject spelling for ClipKey

__all__ = ["ClipKey", "ClipRecord", "RoiStoreError", "Store", "__version__", "open_store"]

_CHECKOUT = _Path(__file__).resolve().parents[1]


class _CheckoutFolders:
    """Finds ``roi_store.cli`` and ``roi_store.schemas`` in a source checkout's ``cli/`` and ``schemas/``.

    An install puts them inside the package (``package_dir`` in setup.cfg), but Python run from a
    checkout's root imports the checkout's ``roi_store/``, which holds neither: without this finder,
    ``python -m roi_store`` and ``python -m benchmarks`` fail there after a non-editable install.
    Only these two names are mapped: nothing else of the checkout becomes part of the package.
    """

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname in (f"{__name__}.cli", f"{__name__}.schemas"):
            return _machinery.PathFinder.find_spec(fullname, [str(_CHECKOUT)])
        return None


# A checkout has setup.cfg beside the package; an installed package has its own cli/ inside.
if (_CHECKOUT / "setup.cfg").is_file() and not (_CHECKOUT / "roi_store" / "cli").is_dir():
    _sys.meta_path.append(_CheckoutFolders)  # last: an editable install's own mapping, if any, is asked first
