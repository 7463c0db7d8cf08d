"""An event's three shapes in the store: as a client asked for it (NewEvent), as the domain decided
it (Decided: hashed into its stream's chain, not yet written) and as stored (StoredEvent)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

import orjson

from service.events.tables import events


@dataclass(frozen=True)
class NewEvent:
    """An event as a client asked for it, validated but not yet decided."""

    type: str
    data: Mapping[str, Any]
    event_id: str | None = None
    occurred_at: datetime | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    on_behalf_of: str | None = None
    # What the request's digest is taken over, when not ``data``: a sealer puts keyed hashes in place
    # of personal values, so that no digest can confirm a guess once a person's key is destroyed.
    digested: Mapping[str, Any] | None = None

    def digest(self, stream_id: str) -> str:
        """A fingerprint of what was asked, so a retry can be told from a different request."""
        content = {
            "stream_id": stream_id,
            "type": self.type,
            "data": self.data if self.digested is None else self.digested,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "on_behalf_of": self.on_behalf_of,
        }
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored; it satisfies the domain's Event protocol."""

    position: int
    event_id: str
    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    actor: str
    recorded_at: datetime
    occurred_at: datetime
    correlation_id: str | None
    causation_id: str | None
    on_behalf_of: str | None
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_id": self.event_id,
            "stream_id": self.stream_id,
            "version": self.version,
            "type": self.type,
            "data": self.data,
            "actor": self.actor,
            "recorded_at": self.recorded_at.isoformat(),
            "occurred_at": self.occurred_at.isoformat(),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "on_behalf_of": self.on_behalf_of,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class Decided:
    """An event the domain accepted, hashed into its stream's chain, not yet written (no position)."""

    event_id: str
    stream_id: str
    version: int
    type: str
    data: Mapping[str, Any]
    actor: str
    recorded_at: datetime
    occurred_at: datetime
    correlation_id: str | None
    causation_id: str | None
    on_behalf_of: str | None
    request_digest: str  # what was asked, so that a retry can be told from another request
    prev_hash: str
    hash: str
    status: str  # the record's status just after it

    def stored(self, position: int) -> StoredEvent:
        return StoredEvent(position, self.event_id, self.stream_id, self.version, self.type, self.data, self.actor,
                           self.recorded_at, self.occurred_at, self.correlation_id, self.causation_id,
                           self.on_behalf_of, self.prev_hash, self.hash)


EVENT_COLUMNS = (events.c.position, events.c.event_id, events.c.stream_id, events.c.version,
                 events.c.type, events.c.data, events.c.actor, events.c.recorded_at,
                 events.c.occurred_at, events.c.correlation_id, events.c.causation_id,
                 events.c.on_behalf_of, events.c.prev_hash, events.c.hash)

def stored_event(row: Any) -> StoredEvent:
    """A stored event from a row of EVENT_COLUMNS."""
    return StoredEvent(*row)


def group_streams(ordered: Iterable[StoredEvent]) -> Iterator[tuple[str, list[StoredEvent]]]:
    """Events ordered by stream (then version), one stream's list at a time."""
    current: list[StoredEvent] = []
    for event in ordered:
        if current and current[0].stream_id != event.stream_id:
            yield current[0].stream_id, current
            current = []
        current.append(event)
    if current:
        yield current[0].stream_id, current
