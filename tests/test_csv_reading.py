"""The one CSV reader of labels files and slide lists: what spreadsheets save is read or named."""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

import pytest

from attnmap.errors import InputError
from attnmap.io_utils import csv_dict_reader
from attnmap.mil.splits import read_labels

ROWS = [("slide_0", "tumour"), ("slide_1", "normal")]


def _rows(path: Path) -> list[tuple[str, str]]:
    return [(row["slide_id"], row["label"]) for row in csv_dict_reader(path, ("slide_id", "label"))]


@pytest.mark.parametrize("mark", [";", "\t", ",", "|"], ids=["semicolon", "tab", "comma", "bar"])
@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8], ids=["plain", "bom"])
def test_excel_separator_hint_line_is_skipped_and_its_separator_used(tmp_path, mark, bom):
    """Excel writes "sep=;" as a first line to name the separator: that line was read as the header,
    so the slide_id and label columns were "not found"."""
    path = tmp_path / "labels.csv"
    lines = [f"sep={mark}", mark.join(("slide_id", "label")), *(mark.join(row) for row in ROWS)]
    path.write_bytes(bom + "\r\n".join(lines).encode() + b"\r\n")
    assert _rows(path) == ROWS
    cohort = read_labels(path)
    assert cohort.slide_ids == [slide for slide, _ in ROWS]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_labels_file_saved_as_unicode_text_is_read(tmp_path, encoding):
    """Excel's "Unicode Text" is UTF-16 with a byte order mark (and tabs): it was refused as "not
    UTF-8", though the mark says unambiguously how to read it."""
    path = tmp_path / "labels.txt"
    text = "\r\n".join(["slide_id\tlabel", *("\t".join(row) for row in [("slide_ä", "Nécrose"), *ROWS])])
    data = text.encode(encoding)
    path.write_bytes(data if encoding == "utf-16" else codecs.BOM_UTF16_BE + data)
    assert _rows(path) == [("slide_ä", "Nécrose"), *ROWS]
    assert set(read_labels(path).class_names) == {"Nécrose", *(label for _, label in ROWS)}


@pytest.mark.parametrize("bom", [codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE], ids=["le", "be"])
def test_a_labels_file_in_utf32_with_its_mark_is_read(tmp_path, bom):
    """UTF-32 with a byte order mark was read as UTF-16 (little-endian: its mark begins with
    UTF-16's, so each character came with a NUL) or refused as "not UTF-8" (big-endian). Now the
    mark says UTF-32, as UTF-16's says UTF-16."""
    path = tmp_path / "labels.txt"
    text = "\r\n".join(["slide_id\tlabel", *("\t".join(row) for row in [("slide_ä", "Nécrose"), *ROWS])])
    path.write_bytes(bom + text.encode("utf-32-le" if bom == codecs.BOM_UTF32_LE else "utf-32-be"))
    assert _rows(path) == [("slide_ä", "Nécrose"), *ROWS]
    broken = tmp_path / "broken.txt"
    broken.write_bytes(path.read_bytes() + b"\xff\xff\xff\xff")
    with pytest.raises(InputError) as caught:
        read_labels(broken)
    assert str(caught.value) == (
        f'{broken} is not a text CSV in UTF-32 (line {text.count(chr(10)) + 1}): save it as "CSV UTF-8"'
    )


def test_a_broken_utf16_file_names_its_line(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("slide_id\tlabel\nslide_0\tnormal\n".encode("utf-16") + b"\x00\xdc")
    with pytest.raises(InputError) as caught:
        read_labels(path)
    assert str(caught.value) == f'{path} is not a text CSV in UTF-16 (line 3): save it as "CSV UTF-8"'


@pytest.mark.parametrize(("name", "kind"), [
    ("labels.xlsx", "an Excel workbook"), ("labels.xls", "an Excel workbook"),
    ("labels.ods", "an OpenDocument spreadsheet"), ("labels.csv", "a spreadsheet")])
def test_a_spreadsheet_given_as_labels_is_named_as_one(tmp_path, name, kind):
    """An .xlsx given as labels got "not a text CSV in UTF-8 (line 1)", which did not say that the
    file is a workbook to export; a workbook renamed .csv is told by its first bytes."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:  # a workbook's container, as far as its bytes show
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(InputError) as caught:
        read_labels(path)
    assert str(caught.value) == f'{path} is {kind}, not a CSV: export it as "CSV UTF-8"'
