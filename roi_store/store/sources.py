"""Where a store lives: a local folder (the only kind written), a zip made by ``roistore pack``, or a URL.

:func:`local_store_path` refuses anything but a folder for a store about to be written;
:func:`open_zip` and :func:`open_url` open the read-only kinds as Zarr groups, with one-line
errors for the ways they fail (an unsafe member name, a missing protocol package, no store).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import zarr
import zarr.errors
import zarr.storage

from roi_store.errors import StoreError


def is_url(text: str) -> bool:
    return "://" in text or "::" in text


def read_only_message(where: str, source: str) -> str:
    if source == "zip":
        return (f"{where} is a zip archive and opens read-only: unpack it into a folder "
                f"(python -m zipfile -e {where} STORE_DIR) and write to that directory store")
    return (f"{where} is a URL and opens read-only: roistore writes only to a directory store on a local path; "
            "copy the store into a local folder to change it")


def local_store_path(path: str | Path) -> Path:
    """The local folder of a store that is going to be written.

    Raises
    ------
    StoreError
        If ``path`` is a URL, a zip archive or another file: only a folder can be written.
    """
    where = str(path)
    if isinstance(path, str) and is_url(where):
        raise StoreError(read_only_message(where, "url"))
    path = Path(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            raise StoreError(read_only_message(where, "zip"))
        raise StoreError(f"{where} is a file, not a store folder: choose a folder for the store")
    return path


def _zip_prefix(names: list[str], where: str) -> str:
    """Where the store lies inside a zip: its top, or the one folder a zipped store folder makes.

    Member names that could point outside the archive (absolute, ``..``, backslashes) are
    refused: zarr reads members by key only, but such an archive was not made by
    ``roistore pack`` and may be a trap for whoever unpacks it.
    """
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or (parts[0][1:2] == ":"):
            raise StoreError(f"{where}: zip member {name!r} has an unsafe name (absolute or with '..'): "
                             "refusing to read this archive; ask for a zip made by 'roistore pack'")
    if "zarr.json" in names:
        return ""
    # A zipped store folder ('zip -r store.zip data/store.zarr'): the one shallowest zarr.json.
    roots = [n[: -len("/zarr.json")] for n in names if n.endswith("/zarr.json")]
    depth = min((r.count("/") for r in roots), default=0)
    tops = sorted(r for r in roots if r.count("/") == depth)
    if len(tops) == 1:
        return tops[0]
    raise StoreError(f"{where} is a zip archive but holds no store at its top (no zarr.json): "
                     "make one with 'roistore pack STORE OUT.zip'")


def _open_group(zstore, prefix: str, where: str) -> zarr.Group:
    try:
        return zarr.open_group(zstore, path=prefix, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"no roistore store at {where} (no Zarr group there): check the path or URL") from None
    except Exception as exc:  # zarr raises a variety of types for a damaged zarr.json
        raise StoreError(f"{where} is not a readable Zarr v3 store ({type(exc).__name__}: {exc}): "
                         "ask for a new copy, made by 'roistore pack'") from None


def open_zip(path: Path) -> zarr.Group:
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{where} is not a readable zip archive ({exc}): ask for a new copy") from None
    prefix = _zip_prefix(names, where)
    return _open_group(zarr.storage.ZipStore(path, mode="r"), prefix, where)


def open_url(url: str) -> zarr.Group:
    import fsspec
    from fsspec.core import split_protocol
    from fsspec.registry import known_implementations

    # A zip behind a URL is read through fsspec's zip file system, member by member.
    if split_protocol(url.split("::")[0])[0] != "zip" and url.split("::")[-1].lower().endswith(".zip"):
        url = f"zip://::{url}"
    for part in url.split("::"):
        protocol = split_protocol(part)[0] or "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            hint = known_implementations.get(protocol, {}).get("err") or str(exc)
            raise StoreError(f"cannot open {url}: the {protocol}:// protocol needs a package that is not installed "
                             f"({hint.splitlines()[0]}): pip install it, or copy the store to a local folder") from None
        except ValueError:
            raise StoreError(f"cannot open {url}: unknown protocol {protocol!r}: use a local path, a .zip file "
                             "or an fsspec URL such as file:///path/store.zarr or s3://bucket/store.zarr") from None
    try:
        zstore = zarr.storage.FsspecStore.from_url(url, read_only=True)
    except Exception as exc:  # the file system's own errors: credentials, missing bucket, bad archive
        raise StoreError(f"cannot open {url} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                         "check the URL and your access to it") from None
    prefix = ""
    archive = getattr(zstore.fs, "sync_fs", zstore.fs)
    if hasattr(getattr(archive, "zip", None), "namelist"):
        zstore = _ArchiveStore(zstore.fs, read_only=True, path=zstore.path.strip("/"))
        if not zstore.path:
            prefix = _zip_prefix(archive.zip.namelist(), url)
    return _open_group(zstore, prefix, url)


class _ArchiveStore(zarr.storage.FsspecStore):
    """An FsspecStore over an archive file system (``zip://``), whose paths have no leading '/'.

    zarr 3.1's ``FsspecStore.list_dir`` joins an empty root path as ``/prefix`` and then cannot
    strip it from the archive's listing, so groups at the archive's top list no members.
    """

    async def list_dir(self, prefix: str):
        base = "/".join(p for p in (self.path.strip("/"), prefix.strip("/")) if p)
        try:
            entries = await self.fs._ls(base, detail=False)
        except FileNotFoundError:
            return
        for entry in entries:
            entry = entry.strip("/")
            if entry != base:
                yield entry.rsplit("/", 1)[-1]
