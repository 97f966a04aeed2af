"""The one CSV reader of labels files and slide lists: what spreadsheets save is read or named."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

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
