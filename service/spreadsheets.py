"""CSV as spreadsheets open it safely: one writer for every CSV the API and the CLI give out."""
from __future__ import annotations

import csv
import json
from typing import Any, Iterable, Sequence, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A CSV cell; one a spreadsheet would run as a formula is kept as text (a leading ')."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    value = str(value)
    return "'" + value if value[:1] in FORMULA_STARTS else value


def write_csv(out: TextIO, header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> None:
    """Write ``header`` (unless None) and ``rows`` as CSV with CRLF line ends, every cell made safe."""
    writer = csv.writer(out, lineterminator="\r\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
