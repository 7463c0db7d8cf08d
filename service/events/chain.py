"""Tamper evidence: each event carries a SHA-256 hash of its content and of the hash of the
event before it in its stream, so that editing, removing or reordering a stored event breaks
the chain from that event on.

The hash is over a canonical serialisation, fixed here and independent of any library's
defaults: the JSON Canonicalization Scheme of RFC 8785 (keys sorted by UTF-16 code units, no
white space, numbers in their shortest ECMAScript form, strings escaped minimally, UTF-8) of
this object, every key always present:

    {"actor", "causation_id", "correlation_id", "data", "event_id", "occurred_at",
     "on_behalf_of", "prev_hash", "recorded_at", "stream_id", "type", "version"}

Times are UTC with exactly six fractional digits and a ``Z`` (``2026-11-20T09:00:00.000000Z``).
Absent optional values are ``null``. The first event's ``prev_hash`` is 64 zeros. The store's
global position is not hashed: it is assigned by the database and only orders the feed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping

import orjson
import rfc8785

GENESIS = "0" * 64
_EXACT = 2**53  # integers beyond this have no exact JSON number in RFC 8785
FORMAT = "casestudies-chain/1"


def canonical_time(value: datetime) -> str:
    """A UTC time as the chain writes it."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def event_hash(*, stream_id: str, version: int, type: str, data: Mapping[str, Any], actor: str,
               on_behalf_of: str | None, recorded_at: datetime, occurred_at: datetime, event_id: str,
               correlation_id: str | None, causation_id: str | None, prev_hash: str) -> str:
    """The SHA-256 (hex) of the event's canonical content, chained to ``prev_hash``."""
    # Written in canonical key order already; only ``data`` needs putting in order.
    content = {
        "actor": actor, "causation_id": causation_id, "correlation_id": correlation_id,
        "data": _canonical(data), "event_id": event_id, "occurred_at": canonical_time(occurred_at),
        "on_behalf_of": on_behalf_of, "prev_hash": prev_hash, "recorded_at": canonical_time(recorded_at),
        "stream_id": stream_id, "type": type, "version": _canonical(version),
    }
    return hashlib.sha256(orjson.dumps(content)).hexdigest()


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of ``value`` (JSON types only), byte for byte.

    orjson does the writing, which is many times faster than the reference implementation
    and already escapes strings and writes most numbers as RFC 8785 asks; the rest is done
    here: keys ordered by UTF-16 code units, integral numbers without a fraction, and numbers
    below 1e-5 (which orjson writes with an exponent) written by the ``rfc8785`` package. A test
    compares the two on random values.
    """
    return orjson.dumps(_canonical(value))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        keys = sorted(value)
        if not all(key.isascii() for key in keys):  # ASCII sorts the same in UTF-16 and code points
            keys.sort(key=_utf16)
        return {key: _canonical(value[key]) for key in keys}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) >= _EXACT:
            raise ValueError(f"{value} is beyond the integers JSON numbers hold exactly")
        return value
    if isinstance(value, float):
        if value.is_integer():
            return _canonical(int(value))
        if abs(value) < 1e-5:
            return orjson.Fragment(rfc8785.dumps(value))
        return value
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be")


def hash_of(event: Any, prev_hash: str) -> str:
    """The hash ``event`` (a stored event) should carry after ``prev_hash``."""
    return event_hash(stream_id=event.stream_id, version=event.version, type=event.type, data=event.data,
                      actor=event.actor, on_behalf_of=event.on_behalf_of, recorded_at=event.recorded_at,
                      occurred_at=event.occurred_at, event_id=event.event_id,
                      correlation_id=event.correlation_id, causation_id=event.causation_id,
                      prev_hash=prev_hash)


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of recomputing one stream's chain."""

    stream_id: str
    intact: bool
    events: int
    version: int
    head_hash: str
    broken_version: int | None = None
    problem: str | None = None
    expected_hash: str | None = None
    found_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.stream_id, "status": "intact" if self.intact else "broken",
                               "events": self.events, "version": self.version, "head_hash": self.head_hash}
        if not self.intact:
            out["broken"] = {"version": self.broken_version, "problem": self.problem,
                             "expected_hash": self.expected_hash, "found_hash": self.found_hash}
        return out


def check_chain(stream_id: str, events: Iterable[Any]) -> ChainCheck:
    """Recompute the chain of ``events`` (oldest first) and report the first broken link."""
    prev, count, version = GENESIS, 0, 0
    for event in events:
        count += 1
        if event.version != version + 1:
            return ChainCheck(stream_id, False, count, version, prev, event.version,
                              f"version {event.version} follows version {version}", None, None)
        if event.prev_hash != prev:
            return ChainCheck(stream_id, False, count, version, prev, event.version,
                              "prev_hash does not match the previous event's hash", prev, event.prev_hash)
        expected = hash_of(event, prev)
        if event.hash != expected:
            return ChainCheck(stream_id, False, count, version, prev, event.version,
                              "content does not match its hash", expected, event.hash)
        prev, version = event.hash, event.version
    return ChainCheck(stream_id, True, count, version, prev)
