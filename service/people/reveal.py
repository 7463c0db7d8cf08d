"""Revealing sealed fields where data leaves the service: in HTTP answers (JSON, HTML, CSV, text),
webhook bodies, exports and the CLI. An erased person's fields read as "erased on <date>"."""
from __future__ import annotations

import csv
import io
from typing import Any, Callable

import orjson

from service.people.keys import TOKEN, TOKEN_BYTES, TOKEN_PREFIX, placeholder, subjects_in, unseal
from service.people.subjects import Opened, Subjects
from service.spreadsheets import csv_cell

SEALED = "sealed (PERSONAL_DATA_KEY is not set)"


class Opener:
    """Opens tokens with the keys as they stand now, each person's key read once per opener
    (an opener lives for one answer: one request, one message, one export). Without the keys
    (``subjects`` None: no master key) every token reads as SEALED: never passed on as it is."""

    def __init__(self, subjects: Subjects | None):
        self.subjects = subjects
        self._keys: dict[str, Opened] = {}

    def _load(self, subject_ids: set[str]) -> None:
        missing = subject_ids - self._keys.keys()
        if missing and self.subjects is None:
            self._keys.update({subject_id: Opened(None, None) for subject_id in missing})
        elif missing:
            found = self.subjects.opened(missing)
            for subject_id in missing:
                self._keys[subject_id] = found.get(subject_id, Opened(None, None))

    def value_of(self, subject_id: str, sealed: str, token: str) -> str:
        """What one token reads as: its value, or the placeholder of an erased person."""
        self._load({subject_id})
        opened = self._keys[subject_id]
        if self.subjects is None:
            return SEALED
        if opened.key is None:
            return placeholder(opened.erased_at)
        value = unseal(subject_id, opened.key, sealed)
        return token if value is None else value  # not one of ours after all: left as it is

    def text(self, text: str, escape: Callable[[str], str] = str) -> str:
        """``text`` with every token replaced by its value, each value passed through ``escape``."""
        if TOKEN_PREFIX not in text:
            return text
        self._load(subjects_in(text))
        return TOKEN.sub(lambda m: escape(self.value_of(m.group(1), m.group(2), m.group(0))), text)

    def json(self, body: bytes) -> bytes:
        """A JSON document with every token replaced by its value (escaped as a JSON string's content)."""
        if TOKEN_PREFIX.encode() not in body:
            return body
        self._load({m.group(1).decode() for m in TOKEN_BYTES.finditer(body)})
        return TOKEN_BYTES.sub(lambda m: _json_escape(self.value_of(
            m.group(1).decode(), m.group(2).decode(), m.group(0).decode())).encode(), body)

    def csv(self, text: str) -> str:
        """CSV text with every token replaced by its value, cells quoted and made safe anew."""
        if TOKEN_PREFIX not in text:
            return text
        self._load(subjects_in(text))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for row in csv.reader(io.StringIO(text, newline="")):
            writer.writerow([csv_cell(self.text(cell, escape=_json_escape if cell[:1] in "{[" else str))
                             if TOKEN_PREFIX in cell else cell for cell in row])
        return out.getvalue()

    def data(self, value: Any) -> Any:
        """A JSON-like value with every token in its strings replaced by its value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.data(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(item) for item in value]
        return value


def _json_escape(value: str) -> str:
    """A value inside a JSON string (a CSV cell may hold a JSON document: a blocker's details)."""
    return orjson.dumps(value).decode()[1:-1]
