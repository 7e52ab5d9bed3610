"""Clip records: the quick schema check gives jsonschema's verdicts and messages, and records
written straight as files are the bytes Zarr writes, read back the same."""

from __future__ import annotations

import copy
import json
import math
import shutil
from decimal import Decimal
from fractions import Fraction

import jsonschema
import numpy as np
import pytest
import zarr
import zarr.storage
from zarr.core.buffer import cpu

import roi_store
from roi_store.store import chunkio
from roi_store.store import format as fmt
from roi_store.errors import StoreError, ValidationError
from roi_store.ingest.pipeline import settings_for
from roi_store.store.share import _store_files, pack_store
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
def test_quick_items_give_jsonschemas_verdicts_and_messages(case):
    doc = CASES[case]()
    quick = fmt._validator("clip")
    assert all_errors(quick, doc) == all_errors(STOCK["clip"], doc)
    expected = first_error(STOCK["clip"], doc)
    assert first_error(quick, doc) == expected
    if expected is None:
        fmt.validate_document(doc, "clip", "x")
    else:
        with pytest.raises(ValidationError) as info:
            fmt.validate_document(doc, "clip", "x")
        assert str(info.value).endswith(expected.split("] ", 1)[1])


def test_expected_verdicts():
    assert first_error(fmt._validator("clip"), CASES["1.0 in frame_numbers"]()) is None
    assert "True is not of type 'integer'" in first_error(fmt._validator("clip"), CASES["bool in frame_numbers"]())
    assert "is too long" in first_error(fmt._validator("clip"), CASES["landmark with 3 numbers"]())
    assert "is too short" in first_error(fmt._validator("clip"), CASES["67 landmarks"]())


def test_a_valid_record_never_descends_into_items(monkeypatch):
    calls = []
    monkeypatch.setattr(fmt, "_STOCK_ITEMS", lambda *args: calls.append(args[1]) or iter(()))
    fmt.validate_document(record(), "clip", "x")
    assert calls == []
    fmt.validate_document(CASES["1.0 in frame_numbers"](), "clip", "x")  # not a plain int: checked one by one
    assert calls == []
    fmt.validate_document(CASES["two faults"](), "clip", "x")  # the stock check finds nothing: it is stubbed
    assert calls == [{"type": "string"}, {"type": "integer"}]


def test_store_header_verdicts():
    header = fmt.stamp({**settings_for(64, "landmarks", None, None), "created": "x", "ingests": [], "skipped": {}})
    bad = copy.deepcopy(header)
    bad["layout"]["canvas"] = [True, 2]
    odd = copy.deepcopy(header)
    odd["layout"]["canvas"] = [128.0, 2]
    for doc in (header, bad, odd):
        assert all_errors(fmt._validator("store"), doc) == all_errors(STOCK["store"], doc)
    assert all_errors(fmt._validator("store"), odd) == []


VALUES = [0, 1, -3, 2**70, 1.0, -0.0, 1.5, math.nan, math.inf, -math.inf, True, False, None, "", "a", [], [1], {},
          Decimal("1"), Fraction(1, 2), 1j, np.int64(3), np.float64(2.0), np.float32(2.5), np.bool_(True)]


@pytest.mark.parametrize("kind", ["string", "integer", "number", "boolean", "null"])
def test_type_tests_equal_jsonschemas(kind):
    stock = STOCK["clip"]
    for value in VALUES:
        assert fmt._fits({"type": kind}, [value]) == stock.is_type(value, kind), (kind, value)
    assert fmt._fits({"type": kind}, [v for v in VALUES if stock.is_type(v, kind)])


@pytest.mark.parametrize("schema, docs", [
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
     [["a", 1, 2], ["a"], [1, 2], ["a", "b"], ["a", 1.0]]),
    ({"type": "array", "items": {"type": "integer", "minimum": 0}}, [[1, 2], [1, -2], [True]]),
    ({"type": "array", "items": {"type": ["integer", "null"]}}, [[1, None], [1, "a"]]),
    ({"type": "array", "items": False}, [[], [1]]),
    ({"type": "array", "items": {"type": "array", "minItems": 1}}, [[[1], ["a"]], [[1], []], [1]]),
    ({"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "null"}}}},
     [[[[None]], [[]]], [[[None, 0]]]]),
])
def test_other_items_schemas(schema, docs):
    quick, stock = fmt._Validator(schema), jsonschema.Draft202012Validator(schema)
    for doc in docs:
        assert all_errors(quick, doc) == all_errors(stock, doc), doc


# --- record files: what Zarr writes -----------------------------------------------------------

@pytest.fixture
def stores(tmp_path):
    """A new store, and a plain Zarr hierarchy beside it that Zarr itself writes records into."""
    store = create_store(tmp_path / "s.zarr", settings_for(64, "landmarks", None, None))
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w")
    ref.require_group("clips")
    return store, ref, tmp_path


def zarr_writes(ref: zarr.Group, doc: dict) -> None:
    path = f"clips/{doc['dataset']}/{doc['subject']}/{doc['clip']}"
    if path in ref:
        ref[path].attrs["record"] = doc
    else:
        ref.create_group(path, attributes={"record": doc})


def same_files(a, b) -> None:
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


ODD = record("EP03_02", "sub02", row=1, source="Tabelle Ä — 表 \U0001f600 \"q\" \\ row 2", emotion="fear",
             fps=1e-7, warnings=["tab\tline\nend"],
             face={"frame": 0, "box": [-0.0, 1e300, 2.5e-8, 0.1], "score": math.nan, "n_faces": 1,
                   "landmarks": [[math.inf, -math.inf]] + [[1, 2.5]] * 67})


def test_record_files_are_the_bytes_zarr_writes(stores):
    store, ref, tmp = stores
    for doc in (pending(), pending("EP03_02", "sub02", row=1), pending("EP01", "sub01", row=2),
                record(), ODD, record("EP01", "sub01", row=2, n=1, frames=["a"], frame_numbers=[1]),
                record(emotion="surprise")):
        written = store.write_record(doc)
        assert written.data == fmt.json_safe(doc)  # control characters escaped
        zarr_writes(ref, written.data)
        same_files(tmp / "s.zarr" / "clips", tmp / "ref.zarr" / "clips")


@pytest.mark.parametrize("doc", [
    {}, {"a": []}, {"a": {}}, {"a": [[], []]}, {"a": [[1, 2], [3]]}, {"a": [[1, 2.0], [3, 4]]},
    {"a": [[[1.5]], [[2.5]]]}, {"a": [1, 2.5, None, True, False, "x"]}, {"a": [["x", "y"], ["z", "%s"]]},
    {"a": (1, 2)}, {"a": {1: "one", 2.5: "x", None: 1, True: 2}}, {"a": np.float64(1.5)}, {"a": 2**100},
    {"\u00e9": "\x00\x1f\x7f\u2028\ud800"}, {"a": [{"b": [1]}, {}]},
])
@pytest.mark.parametrize("indent", [2, 4, 0, None])
def test_group_json_equals_json_dumps(doc, indent):
    with zarr.config.set({"json_indent": indent}):
        got = chunkio.group_json(doc)
        assert got == zarr.core.group.GroupMetadata(attributes=doc).to_buffer_dict(cpu.buffer_prototype)[
            "zarr.json"].to_bytes()


def test_json_that_json_refuses_is_refused_the_same_way():
    loop: list = []
    loop.append(loop)
    for doc, error in (({"a": {1, 2}}, TypeError), ({"a": loop}, ValueError), ({"a": np.int64(1)}, TypeError)):
        with pytest.raises(error):
            json.dumps(doc, indent=2)
        with pytest.raises(error):
            chunkio.group_json(doc)


def test_parents_are_made_only_when_missing(stores):
    store, ref, tmp = stores
    clips = tmp / "s.zarr" / "clips"
    zarr.open_group(str(tmp / "s.zarr"), mode="r+").create_group("clips/samm", attributes={"note": "kept"})
    kept = (clips / "samm" / "zarr.json").read_bytes()
    shutil.rmtree(clips)  # every group above a clip is missing
    store.write_record(pending())
    zarr_writes(ref, pending())
    same_files(clips, tmp / "ref.zarr" / "clips")
    assert (clips / "casme2" / "sub01" / "zarr.json").read_bytes() == chunkio.group_json({})
    (clips / "samm").mkdir()  # a group above a clip that has attributes of its own
    (clips / "samm" / "zarr.json").write_bytes(kept)
    store.write_record({**pending(), "id": "samm/007/007_1_2", "dataset": "samm", "subject": "007",
                        "clip": "007_1_2"})
    assert (clips / "samm" / "zarr.json").read_bytes() == kept
    assert zarr.open_group(str(tmp / "s.zarr"), mode="r")["clips/samm"].attrs["note"] == "kept"
    assert (clips / "samm" / "007" / "zarr.json").read_bytes() == chunkio.group_json({})


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
    assert not [p for p in (tmp / "s.zarr").rglob("*") if p.name.endswith(chunkio.TEMP_SUFFIX)]


def test_a_failed_write_keeps_the_old_record(stores, monkeypatch):
    store, _, tmp = stores
    store.write_record(record())
    before = (tmp / "s.zarr" / "clips" / "casme2" / "sub01" / "EP02_01f" / "zarr.json").read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt  # as a signal arriving between the write and the rename

    monkeypatch.setattr(chunkio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_record(record(emotion="fear"))
    monkeypatch.undo()
    folder = tmp / "s.zarr" / "clips" / "casme2" / "sub01" / "EP02_01f"
    assert [p.name for p in folder.iterdir()] == ["zarr.json"]
    assert (folder / "zarr.json").read_bytes() == before


def test_temp_files_of_a_killed_writer_are_not_part_of_the_store(stores):
    store, _, tmp = stores
    store.write_record(record())
    root = tmp / "s.zarr"
    (root / "clips" / "casme2" / "sub01" / "EP02_01f" / ".zarr.json.999.tmp").write_bytes(b'{"attrib')
    (root / "clips" / "casme2" / "sub03" / "EP09").mkdir(parents=True)  # killed before its first rename
    (root / "clips" / "casme2" / "sub03" / "EP09" / ".zarr.json.999.tmp").write_bytes(b"")
    with roi_store.open_store(root) as again:
        assert list(again.records()) == ["casme2/sub01/EP02_01f"] and not again.damaged
    assert not [name for name, _ in _store_files(root) if name.endswith(chunkio.TEMP_SUFFIX)]


def test_other_stores_write_through_zarr(plain, tmp_path):
    doc = {**roi_store.open_store(plain).clips[0].data, "emotion": "fear"}
    key = f"clips/{doc['dataset']}/{doc['subject']}/{doc['clip']}/zarr.json"
    # A packed store opens read-only, as before.
    pack_store(plain, tmp_path / "s.zip")
    with roi_store.open_store(tmp_path / "s.zip") as packed:
        assert packed.records() == roi_store.open_store(plain).records()
        with pytest.raises(StoreError, match="zip archive and opens read-only"):
            packed.write_record(doc)
    # A writable store that is not a local folder: Zarr writes the same bytes as the folder.
    memory = zarr.storage.MemoryStore({p.relative_to(plain).as_posix(): cpu.Buffer.from_bytes(p.read_bytes())
                                       for p in plain.rglob("*") if p.is_file()})
    in_memory = Store(zarr.open_group(memory, mode="r+"), "memory", "r+")
    assert chunkio.group_folder(in_memory.zgroup) is None
    in_memory.write_record(doc)
    # A folder store whose group lies below the store's root is written directly.
    shutil.copytree(plain, tmp_path / "outer" / "inner" / "v1.zarr")
    below = Store(zarr.open_group(zarr.storage.LocalStore(tmp_path / "outer"), path="inner/v1.zarr", mode="r+"),
                  "below", "r+")
    assert chunkio.group_folder(below.zgroup) == tmp_path / "outer" / "inner" / "v1.zarr"
    below.write_record(doc)
    roi_store.open_store(plain, mode="r+").write_record(doc)
    assert memory._store_dict[key].to_bytes() == (plain / key).read_bytes()
    assert (tmp_path / "outer" / "inner" / "v1.zarr" / key).read_bytes() == (plain / key).read_bytes()
    assert in_memory.records()[doc["id"]].emotion == "fear"
    with roi_store.open_store(tmp_path / "outer" / "inner" / "v1.zarr") as again:
        assert again.records()[doc["id"]].data == doc
    read_only = zarr.open_group(zarr.storage.LocalStore(plain, read_only=True), mode="r")
    assert chunkio.group_folder(read_only) is None


# --- json_safe: the lists it passes over whole -----------------------------------------------

def test_json_safe_escapes_in_every_list():
    doc = {"frames": ["a.jpg", "EP\udcff.jpg"], "t": ("x", "\x07"), "n": [1, 2.5, None, True], "k": [["\n"]],
           "plain": ("a", "b")}
    assert fmt.json_safe(doc) == {"frames": ["a.jpg", "EP\\xff.jpg"], "t": ["x", "\\x07"], "n": [1, 2.5, None, True],
                                  "k": [["\\x0a"]], "plain": ["a", "b"]}
    assert type(fmt.json_safe(doc)["plain"]) is list
