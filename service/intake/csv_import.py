"""Batch intake for CRMs without webhooks: a CSV export of deals, taken row by row.

The columns are the deal fields of ``deals.Deal`` (header names matched case-insensitively,
spaces and hyphens read as underscores, ``owner`` for ``csm``); other columns are ignored and
named in the report. Each row is taken exactly as a posted deal would be, so running the same
export again creates nothing new.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, TextIO

from service.events.errors import DatabaseUnavailable, StoreError
from service.events.store import EventStore
from service.intake.deals import FIELDS, DealConflict, InvalidDeal, as_token, parse_deal, take

REQUIRED_COLUMNS = ("deal_id", "case_study_commitment")


class ImportFileError(Exception):
    """The file cannot be imported at all (no header, a required column missing)."""


@dataclass(frozen=True)
class RowOutcome:
    line: int  # the file's line the row ends on
    deal_id: str | None
    decision: str  # created | exists | not_created | invalid
    reason: str
    stream_id: str | None = None


def _dialect(source: TextIO) -> type[csv.Dialect]:
    """Excel's CSV with the delimiter the header uses most: comma, semicolon (Excel where the
    decimal mark is a comma) or tab."""
    header = source.readline()
    source.seek(0)
    delimiter = max(",;\t", key=header.count)

    class Export(csv.excel):
        pass

    Export.delimiter = delimiter
    return Export


def read_rows(source: TextIO) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The ignored columns and the rows (line, {field: cell}) of a CSV export, read lazily."""
    reader = csv.reader(source, _dialect(source))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty: it needs a header row") from None
    names = [as_token(cell) for cell in header]
    known = [name if name in FIELDS else None for name in names]
    seen = [name for name in known if name]
    repeated = sorted({name for name in seen if seen.count(name) > 1})
    if repeated:
        raise ImportFileError(f"columns given twice: {', '.join(repeated)}")
    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if missing:
        raise ImportFileError(f"the header has no {' or '.join(missing)} column; the columns are "
                              f"{', '.join(FIELDS)} (in any case; other columns are ignored)")
    ignored = [cell for cell, name in zip(header, known) if name is None and cell.strip()]

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines, which spreadsheets leave at the end
            yield reader.line_num, {name: cell for name, cell in zip(known, cells) if name}

    return ignored, rows()


def count_rows(source: TextIO) -> int:
    """How many non-blank rows follow the header (for a progress bar)."""
    total = 0
    try:
        for cells in csv.reader(source, _dialect(source)):
            total += any(cell.strip() for cell in cells)
    except csv.Error:
        pass  # counted up to where it cannot be read; the import reports it there
    source.seek(0)
    return max(total - 1, 0)


def import_rows(store: EventStore, rows: Iterator[tuple[int, dict[str, str]]], *, actor: str,
                now: datetime) -> Iterator[RowOutcome]:
    """Take each row as a deal; an invalid row is reported and the others go on."""
    for line, cells in rows:
        deal_id = (cells.get("deal_id") or "").strip() or None
        try:
            deal = parse_deal(cells)
            intake = take(store, deal, actor=actor, now=now)
        except InvalidDeal as invalid:
            reason = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"]
                               for e in invalid.errors)
            yield RowOutcome(line, deal_id, "invalid", reason)
            continue
        except DealConflict as conflict:
            yield RowOutcome(line, deal_id, "invalid", str(conflict))
            continue
        except DatabaseUnavailable:
            raise  # not the row's fault: the import stops, and a re-run carries on
        except StoreError as refused:  # e.g. a record of that id made by hand, in a state the row cannot follow
            yield RowOutcome(line, deal_id, "invalid", str(refused))
            continue
        yield RowOutcome(line, deal.deal_id, intake.decision, intake.reason,
                         intake.stream_id if intake.record else None)
