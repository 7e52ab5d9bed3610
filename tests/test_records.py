"""Clip records: the quick schema check gives jsonschema's verdicts and messages."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from fractions import Fraction

import jsonschema
import numpy as np
import pytest

from roi_store import format as fmt
from roi_store.errors import ValidationError
from roi_store.ingest import settings_for


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
