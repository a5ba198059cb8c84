"""CSV cells (analytics.md §4): RFC 4180 quoting and formula-injection escaping."""

from __future__ import annotations

import csv
import io

import pytest

from services.analytics.export import csv_header, csv_row, number_cell, text_cell
from tests.analytics.conftest import make_event


@pytest.mark.parametrize(
    "value, cell",
    [
        ("plain", "plain"),
        ("", ""),
        (None, ""),
        ("a,b", '"a,b"'),
        ('say "hi"', '"say ""hi"""'),
        ("line\nbreak", '"line\nbreak"'),
        ("cr\rinside", '"cr\rinside"'),
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2", "'-2"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", '"\'\rx"'),
        ('=HYPERLINK("http://x","y")', '"\'=HYPERLINK(""http://x"",""y"")"'),
        ("a=b", "a=b"),
        ("'quoted", "'quoted"),
    ],
)
def test_text_cells(value: str | None, cell: str) -> None:
    assert text_cell(value) == cell


@pytest.mark.parametrize(
    "value, fmt, cell",
    [
        (None, None, ""),
        (True, None, "true"),
        (False, None, "false"),
        (200, None, "200"),
        (1800000000.0, None, "1800000000"),
        (1800000000.25, None, "1800000000.25"),
        (12.345, "%.2f", "12.35"),
        (0.0000015, "%.6f", "0.000002"),
        (3, "%.6f", "3.000000"),
    ],
)
def test_number_cells(value: object, fmt: str | None, cell: str) -> None:
    assert number_cell(value, fmt) == cell


def test_rows_parse_back_with_a_standard_csv_reader() -> None:
    hostile = make_event(
        request={"model": 'x,"y"\r\nz', "endpoint": "-e"}, routing={"backend": None}
    )
    text = csv_header() + csv_row(hostile) + csv_row(make_event(token_usage=None))
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 3 and all(len(r) == 17 for r in rows)
    assert rows[1][4] == 'x,"y"\r\nz' and rows[1][2] == "'-e" and rows[1][15] == ""
    assert rows[2][10:15] == ["", "", "", "", ""]
