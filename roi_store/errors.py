"""The exceptions roistore raises.

Every error a user can cause derives from :class:`RoiStoreError`; the command line turns it into
one line and a non-zero exit. Anything else is a bug and keeps its traceback.
"""


class RoiStoreError(Exception):
    """Root of every error roistore raises on purpose."""


class DatasetError(RoiStoreError, ValueError):
    """A dataset folder does not have the layout its reader expects."""


class AnnotationError(RoiStoreError, ValueError):
    """An annotation sheet, manifest or view file cannot be used as given."""


class FrameError(RoiStoreError, ValueError):
    """A frame file cannot be decoded, or a clip's frames do not fit together."""


class FaceError(RoiStoreError):
    """No usable face or landmarks were found where they were needed."""


class StoreError(RoiStoreError):
    """A store is missing, malformed, or cannot be written as asked."""


class FormatVersionError(StoreError):
    """A store was written by a newer or unknown format version."""


class RunBusyError(StoreError):
    """Another process is writing the run (or the run's lock says so)."""


class StoreBusyError(StoreError):
    """Another ingest is writing the store (or the store's lock says so)."""


class ValidationError(StoreError):
    """A store does not match its schema or a chunk fails its checksum."""


class ConfigError(RoiStoreError, ValueError):
    """An option or configuration value is not one of the allowed values."""


class ClusterError(RoiStoreError):
    """A dask scheduler cannot be reached, or its workers cannot run the tasks as asked."""


class RunMismatchError(RoiStoreError, ValueError):
    """Two runs cannot be compared: they score different clips, views or classes."""
