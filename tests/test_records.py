"""Clip records: their schema's verdicts, records written and read back through Zarr, and the
stores they can be written to."""

from __future__ import annotations

import math
import shutil

import jsonschema
import pytest
import zarr
import zarr.storage
from zarr.buffer import cpu

import roi_store
from roi_store.store import format as fmt
from roi_store.errors import StoreError, ValidationError
from roi_store.ingest.pipeline import settings_for
from roi_store.store.share import PARTIAL_SUFFIX, _store_files, pack_store
from roi_store.store.store import ClipRecord, Store, create_store


def record(clip="EP02_01f", subject="sub01", n=500, row=0, **changes) -> dict:
    """A complete record as ingest writes it, ``n`` frames long."""
    doc = {
        "id": f"casme2/{subject}/{clip}", "dataset": "casme2", "subject": subject, "clip": clip,
        "source": "CASME2-coding.xlsx row 4", "folder": f"{subject}/{clip}", "row": row, "status": "complete",
        "n_frames": n, "fps": 200.0, "emotion": "happiness", "aus": ["12", "L9"],
        "onset": 46, "apex": 59, "offset": None,
        "frames": [f"img{46 + k}.jpg" for k in range(n)], "frame_numbers": list(range(46, 46 + n)),
        "frame_size": [640, 480], "decode_factor": 1,
        "labels": {"megc2019": "positive"}, "excluded": {},
        "relabel": {"megc2019": {"default": ["positive"] * 6, "au": ["positive", "not_me"] * 3, "au_source": "aus"}},
        "face": {"frame": 0, "box": [307, 142, 474.5, 307], "score": 1.6764, "n_faces": 1,
                 "landmarks": [[300.0 + k, 188.25 + k / 3] for k in range(68)]},
        "cuts": {f"R{i}": {"box": [317.25, 143.93, 387.75, 200.32 + i], "valid": None} for i in range(6)},
        "warnings": [], "ingested": "2026-01-01T00:00:00+00:00",
    }
    return {**doc, **changes}


def pending(clip="EP02_01f", subject="sub01", row=0) -> dict:
    full = record(clip, subject, row=row)
    return {**{k: full[k] for k in ("id", "dataset", "subject", "clip", "source", "folder")},
            "status": "pending", "row": row}


# --- validation: the quick items check against jsonschema's own -------------------------------

STOCK = {name: jsonschema.Draft202012Validator(fmt.schema(name)) for name in ("clip", "store")}


def all_errors(validator, doc) -> list:
    return sorted((repr(list(e.absolute_path)), e.message, e.validator) for e in validator.iter_errors(doc))


def first_error(validator, doc) -> str | None:
    """What validate_document reports: the error with the smallest path."""
    error = next(iter(sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))), None)
    return None if error is None else f"{list(error.absolute_path)} {error.message}"


def changed(path: tuple, value=None, *, drop: bool = False, **kw):
    """A change of ``record(**kw)``: the value at ``path`` set (or, with ``drop``, removed)."""
    def make():
        doc = record(**kw)
        node = doc
        for key in path[:-1]:
            node = node[key]
        if drop:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return doc
    return make


CASES = {
    "valid": record,
    "short": lambda: record(n=3),
    "no frames": lambda: record(n=0),
    "1.0 in frame_numbers": changed(("frame_numbers", 4), 50.0),
    "-0.0 in frame_numbers": changed(("frame_numbers", 0), -0.0),
    "wrong type in frames": changed(("frames", 7), 7),
    "None in frames": changed(("frames", 499), None),
    "frames not a list": changed(("frames",), "img1.jpg"),
    "bool in frame_numbers": changed(("frame_numbers", 2), True),
    "fraction in frame_numbers": changed(("frame_numbers", 2), 2.5),
    "nan in frame_numbers": changed(("frame_numbers", 2), math.nan),
    "text in frame_numbers": changed(("frame_numbers", 2), "48"),
    "landmark with 3 numbers": changed(("face", "landmarks", 10), [1.0, 2.0, 3.0]),
    "landmark with 1 number": changed(("face", "landmarks", 10), [1.0]),
    "bool in a landmark": changed(("face", "landmarks", 3, 1), False),
    "landmark as text": changed(("face", "landmarks", 3), "1,2"),
    "67 landmarks": changed(("face", "landmarks", 67), drop=True),
    "69 landmarks": changed(("face", "landmarks"), [[1.0, 2.0]] * 69),
    "int landmarks": changed(("face", "landmarks"), [[k, k + 1] for k in range(68)]),
    "nan in a box": changed(("face", "box", 1), math.nan),
    "bool in a box": changed(("face", "box", 1), True),
    "box of 3": changed(("cuts", "R2", "box"), [1.0, 2.0, 3.0]),
    "frame_size of 3": changed(("frame_size",), [640, 480, 3]),
    "1.5 in frame_size": changed(("frame_size", 0), 1.5),
    "int in aus": changed(("aus", 1), 9),
    "int in relabel": changed(("relabel", "megc2019", "au", 0), 1),
    "int in warnings": changed(("warnings",), ["a", 1]),
    "two faults": lambda: {**record(), "frames": ["a", 1], "frame_numbers": [0, False]},
    "number as dataset": changed(("dataset",), 3),
    "None as emotion": changed(("emotion",), None),
    "text as face score": changed(("face", "score"), "1"),
    "no folder": changed(("folder",), drop=True),
    "not an object": lambda: ["casme2/sub01/EP02_01f"],
}


@pytest.mark.parametrize("case", CASES)
def test_validate_document_names_the_first_problem(case):
    doc = CASES[case]()
    expected = first_error(STOCK["clip"], doc)
    if expected is None:
        fmt.validate_document(doc, "clip", "x")
        return
    with pytest.raises(ValidationError) as info:
        fmt.validate_document(doc, "clip", "x")
    assert str(info.value).startswith("x: clip document does not match its schema at ")
    assert str(info.value).endswith(expected.split("] ", 1)[1])


def test_expected_verdicts():
    assert first_error(STOCK["clip"], CASES["1.0 in frame_numbers"]()) is None
    assert "True is not of type 'integer'" in first_error(STOCK["clip"], CASES["bool in frame_numbers"]())
    assert "is too long" in first_error(STOCK["clip"], CASES["landmark with 3 numbers"]())
    assert "is too short" in first_error(STOCK["clip"], CASES["67 landmarks"]())


@pytest.fixture
def stores(tmp_path):
    """A new store."""
    return create_store(tmp_path / "s.zarr", settings_for(64, "landmarks", None, None)), None, tmp_path


ODD = record("EP03_02", "sub02", row=1, source="Tabelle Ä — 表 \U0001f600 \"q\" \\ row 2", emotion="fear",
             fps=1e-7, warnings=["tab\tline\nend"],
             face={"frame": 0, "box": [-0.0, 1e300, 2.5e-8, 0.1], "score": math.nan, "n_faces": 1,
                   "landmarks": [[math.inf, -math.inf]] + [[1, 2.5]] * 67})


def test_odd_text_in_records_reads_back_escaped(stores):
    store, _, tmp = stores
    written = store.write_record(ODD)
    assert written.data == fmt.json_safe(ODD)  # control characters escaped
    with roi_store.open_store(tmp / "s.zarr") as again:
        assert again.records()[written.id].data["warnings"] == ["tab\\x09line\\x0aend"]
        assert again.records()[written.id].data["source"] == ODD["source"]


def test_records_read_back_through_zarr(stores):
    store, _, tmp = stores
    docs = [pending(), pending("EP03_02", "sub02", row=1), record(), record("EP03_02", "sub02", row=1, n=7),
            record("EP03_02", "sub02", row=1, n=8)]
    written = {}
    for doc in docs:
        rec = store.write_record(doc)
        written[rec.id] = rec
    assert store.records() == written  # read by Zarr: nothing was cached before
    store.write_record(record(emotion="fear"))  # kept in the open store's records
    written["casme2/sub01/EP02_01f"] = ClipRecord.from_doc(record(emotion="fear"))
    assert store.records() == written
    with roi_store.open_store(tmp / "s.zarr") as again:
        assert again.records() == written
        assert not again.damaged
    assert not [p for p in (tmp / "s.zarr").rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]


def test_temp_files_of_a_killed_writer_are_not_part_of_the_store(stores):
    store, _, tmp = stores
    store.write_record(record())
    root = tmp / "s.zarr"
    (root / "clips" / "casme2" / "sub01" / "EP02_01f" / "zarr.json.0f3a.partial").write_bytes(b'{"attrib')
    with roi_store.open_store(root) as again:
        assert list(again.records()) == ["casme2/sub01/EP02_01f"] and not again.damaged
    assert not [name for name, _ in _store_files(root) if name.endswith(PARTIAL_SUFFIX)]


def test_other_stores_write_through_zarr(plain, tmp_path):
    doc = {**roi_store.open_store(plain).clips[0].data, "emotion": "fear"}
    # A packed store opens read-only, as before.
    pack_store(plain, tmp_path / "s.zip")
    with roi_store.open_store(tmp_path / "s.zip") as packed:
        assert packed.records() == roi_store.open_store(plain).records()
        with pytest.raises(StoreError, match="zip archive and opens read-only"):
            packed.write_record(doc)
    # A writable store that is not a local folder, and a folder store whose group lies below the
    # store's root: both written through Zarr, and read back.
    memory = zarr.storage.MemoryStore({p.relative_to(plain).as_posix(): cpu.Buffer.from_bytes(p.read_bytes())
                                       for p in plain.rglob("*") if p.is_file()})
    in_memory = Store(zarr.open_group(memory, mode="r+"), "memory", "r+")
    in_memory.write_record(doc)
    assert in_memory.records()[doc["id"]].emotion == "fear"
    shutil.copytree(plain, tmp_path / "outer" / "inner" / "v1.zarr")
    below = Store(zarr.open_group(zarr.storage.LocalStore(tmp_path / "outer"), path="inner/v1.zarr", mode="r+"),
                  "below", "r+")
    below.write_record(doc)
    with roi_store.open_store(tmp_path / "outer" / "inner" / "v1.zarr") as again:
        assert again.records()[doc["id"]].data == doc
        assert again.frames(doc["id"], again.regions[0]).shape[0] == doc["n_frames"]


# --- json_safe: the lists it passes over whole -----------------------------------------------

def test_json_safe_escapes_in_every_list():
    doc = {"frames": ["a.jpg", "EP\udcff.jpg"], "t": ("x", "\x07"), "n": [1, 2.5, None, True], "k": [["\n"]],
           "plain": ("a", "b")}
    assert fmt.json_safe(doc) == {"frames": ["a.jpg", "EP\\xff.jpg"], "t": ["x", "\\x07"], "n": [1, 2.5, None, True],
                                  "k": [["\\x0a"]], "plain": ["a", "b"]}
    assert type(fmt.json_safe(doc)["plain"]) is list
