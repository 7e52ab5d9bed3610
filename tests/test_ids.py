"""Clip ids: each dataset's subject spelling, and names in any script."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

from roi_store.errors import AnnotationError, ConfigError
from roi_store.ids import ClipKey, SubjectSpelling, normalise_subject, register_spelling

_ALLOWED = (
    "rename it (a name may use letters, digits, blanks and punctuation of any script, but no "
    "'/', '\\' or control characters, and may not be '.' or '..')"
)


# The spellings stores already hold ids in: none of these may ever change.
@pytest.mark.parametrize(
    ("dataset", "given", "canonical"),
    [*[("casme2", v, "sub01") for v in ("1", "01", "1.0", "sub1", "sub01", "Sub01", 1, 1.0)],
     ("casme2", " sub12 ", "sub12"),
     *[("samm", v, "006") for v in ("6", "06", "006", "6.0", 6, 6.0)],
     *[("smic", v, "s1") for v in ("1", "s1", "s01", "S01", 1)],
     ("mmew", " S01 ", "S01"), ("mmew", 7.0, "7"), ("lab", "被试1", "被试1")],
)
def test_subject_spellings(dataset, given, canonical):
    assert normalise_subject(dataset, given) == canonical
    assert ClipKey.make(dataset, given, "c1").subject == canonical


@pytest.mark.parametrize(
    ("clip", "canonical"),
    [("s01_ne_01", "s1_ne_01"), ("S1_po_02", "s1_po_02"), ("s1_ne_01", "s1_ne_01"),
     ("x01_ne_01", "x01_ne_01"), ("s01", "s01")],
)
def test_smic_clip_names_follow_the_subject(clip, canonical):
    assert ClipKey.make("smic", "s01", clip).id == f"smic/s1/{canonical}"


@pytest.mark.parametrize(
    ("dataset", "given", "message"),
    [("casme2", "x1", "invalid casme2 subject id 'x1': expected a number such as 1, 01 or sub01"),
     ("samm", "s6", "invalid samm subject id 's6': expected a number such as 1, 01"),
     ("smic", "s1.5", "invalid smic subject id 's1.5': expected a number such as 1, 01 or s01")],
)
def test_subject_not_in_the_dataset_spelling(dataset, given, message):
    with pytest.raises(AnnotationError) as err:
        ClipKey.make(dataset, given, "c1")
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("dataset", "subject", "clip", "clip_id"),
    [("casme2", "01", "EP02_03é", "casme2/sub01/EP02_03é"),
     ("lab", "被试1", "表情01", "lab/被试1/表情01"),
     ("Лаб", "Иван", "клип 1", "лаб/Иван/клип 1"),
     ("lab", "p1", ".hidden", "lab/p1/.hidden")],
)
def test_names_in_any_script(dataset, subject, clip, clip_id):
    key = ClipKey.make(dataset, subject, clip)
    assert key.id == str(key) == clip_id
    assert ClipKey.parse(clip_id) == key


def test_names_are_compared_composed():
    # macOS file systems hand back "é" as e + a combining accent; a sheet types it composed.
    decomposed = unicodedata.normalize("NFD", "EP02_03é")
    assert decomposed != "EP02_03é"
    assert ClipKey.make("casme2", "sub01", decomposed) == ClipKey.make("casme2", 1, "EP02_03é")


@pytest.mark.parametrize(
    ("clip", "shown", "why"),
    [("a/b", "a/b", "the name holds '/', a path separator"),
     ("a\\b", "a\\b", "the name holds '\\', a path separator"),
     ("..", "..", "'..' is a relative path, not a name"),
     (".", ".", "'.' is a relative path, not a name"),
     ("", "", "the name is empty"),
     ("ab\x01c", "ab\\x01c", "the name holds the control character U+0001"),
     ("a\nb", "a\\x0ab", "the name holds the control character U+000A"),
     ("a\u2028b", "a\\u2028b", "the name holds the control character U+2028"),
     ("ZARR.json", "ZARR.json", "the name is reserved by the store format")],
)
def test_refused_clip_names(clip, shown, why):
    with pytest.raises(AnnotationError) as err:
        ClipKey.make("lab", "p1", clip)
    assert str(err.value) == f"invalid clip name '{shown}': {why}; {_ALLOWED}"
    assert len(str(err.value).splitlines()) == 1


def test_refused_subject_and_dataset_names():
    with pytest.raises(AnnotationError, match=r"^invalid subject id '\.\.': '\.\.' is a relative path"):
        ClipKey.make("lab", "..", "c1")
    with pytest.raises(AnnotationError, match=r"^invalid dataset name 'a/b': the name holds '/', a path sep"):
        ClipKey.make("a/b", "p1", "c1")
    with pytest.raises(AnnotationError, match=r"^invalid clip id 'lab/p1': expected dataset/subject/clip"):
        ClipKey.parse("lab/p1")


def test_name_that_is_not_utf8_shows_its_bytes():
    name = b"s1_ne_\xff1".decode("utf-8", "surrogateescape")  # as os.listdir hands it over
    with pytest.raises(AnnotationError) as err:
        ClipKey.make("smic", "s1", name)
    assert str(err.value).startswith("invalid clip name 's1_ne_\\xff1': the name is not valid UTF-8 text;")


def test_surrounding_blanks_are_stripped_at_the_edge():
    assert ClipKey.make(" CASME2 ", " 01 ", " EP02_01f\t").id == "casme2/sub01/EP02_01f"


def test_a_new_dataset_declares_its_spelling():
    register_spelling("test-lab-p3", SubjectSpelling(prefix="p", width=3))
    register_spelling("test-lab-p3", SubjectSpelling(prefix="p", width=3))  # the same again: fine
    assert ClipKey.make("test-lab-p3", "P7", "c1").id == "test-lab-p3/p007/c1"
    with pytest.raises(ConfigError, match=r"^dataset 'casme2' already spells its subjects as"):
        register_spelling("casme2", SubjectSpelling(prefix="sub", width=3))
    assert ClipKey.make("casme2", 1, "c1").subject == "sub01"


def test_spellings_are_registered_by_importing_the_package():
    # A process that only uses ids (a store, a view file) spells subjects as ingest did.
    code = ("from roi_store.ids import ClipKey; "
            "print(ClipKey.make('casme2', '1', 'a').id, ClipKey.make('smic', 'S01', 's01_x').id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["casme2/sub01/a", "smic/s1/s1_x"]
