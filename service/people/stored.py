"""Sealing events stored before the service sealed personal data (run once, by migration 0006).

The events table is append-only and hash-chained, so this is the one place that rewrites it, and
it says so: inside the migration's transaction the append-only triggers are lifted; each stored
event that names a person gets its personal fields sealed, and every event of its stream from
there on is hashed anew; each old and new hash is kept in ``chain_reseals``; a receipt in
``reseals`` records each stream's old and new head, the SHA-256 of the whole old-to-new list and
an HMAC under the master key; the triggers are put back. A digest written before still checks out
(``audit verify --digest`` follows the kept hashes), and ``audit verify`` passes on the new chains.
The copies that held the data in clear are made again from the sealed events: the state table by
replay, the projections by a rebuild from position 0 (the projections worker does it on start),
and webhook messages in the outbox get the sealed data of their event. Each sealed event's request
digest is taken anew over keyed hashes of its personal values, as appends take it now.
"""
from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select, update

from service.domain import replay
from service.events.chain import GENESIS, canonical_json, hash_of
from service.events.event import EVENT_COLUMNS, NewEvent, StoredEvent, stored_event
from service.events.schemas import PERSONAL_FIELDS
from service.events.tables import case_studies, chain_reseals, events, reseals, state_row
from service.notifications.tables import outbox
from service.people.keys import TOKEN, Keyring
from service.people.subjects import Sealer, Subjects, get_path

_SQLITE_TRIGGERS = {
    "events_no_update": "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
                        "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE on events is refused'); END",
    "events_no_delete": "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
                        "BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE on events is refused'); END",
}


class _Here(Subjects):
    """People found and made on the migration's own connection (its transaction holds the locks)."""

    def __init__(self, conn: Connection, keyring: Keyring, now: datetime):
        super().__init__(conn.engine, keyring, cache_seconds=3600, clock=lambda: now)
        self.conn = conn
        self._found: dict[tuple[str, ...], tuple[str, bytes]] = {}

    def keys_for(self, people):
        for handles in people:
            if handles not in self._found or not handles:
                self._found[handles] = self._resolve(self.conn, handles)
        return [self._found[handles] for handles in people]


def in_clear(conn: Connection) -> bool:
    """True when some stored event holds a personal field in clear."""
    query = select(events.c.type, events.c.data).where(events.c.type.in_(list(PERSONAL_FIELDS)))
    result = conn.execute(query)
    try:
        for row in result:
            for field in PERSONAL_FIELDS[row.type]:
                value = get_path(row.data, field.path)
                if isinstance(value, str) and not TOKEN.fullmatch(value):
                    return True
        return False
    finally:
        result.close()


def seal_stored(conn: Connection, master_key: str, now: datetime | None = None) -> dict[str, Any]:
    """Seal every personal field stored in clear (``in_clear`` says whether there is any), re-chain
    what that changes and rebuild the copies. Returns the receipt."""
    now = now or datetime.now(UTC)
    keyring = Keyring(master_key)
    sealer = Sealer(_Here(conn, keyring, now))
    reseal_id = str(uuid.uuid4())
    streams = [row.stream_id for row in conn.execute(
        select(events.c.stream_id).where(events.c.type.in_(list(PERSONAL_FIELDS))).distinct())]
    _lift_triggers(conn)
    heads, mapping, sealed_data = [], [], {}
    for stream_id in sorted(streams):
        stream = [stored_event(row) for row in conn.execute(
            select(*EVENT_COLUMNS).where(events.c.stream_id == stream_id).order_by(events.c.version))]
        account = stream[0].data.get("account", {}).get("id") if stream and stream[0].type == "committed" else None
        prev, rewritten = GENESIS, []
        for event in stream:
            data, changed = event.data, {}
            if event.type in PERSONAL_FIELDS and (sealed := _sealed(sealer, stream_id, event, account)) is not None:
                # The request's digest is taken anew over keyed hashes of the personal values, as an
                # append does now (a retry of a request from before this migration is told apart).
                data = dict(sealed.data)
                changed = {"data": data, "request_digest": sealed.digest(stream_id)}
            new = StoredEvent(**{**event.__dict__, "data": data, "prev_hash": prev})
            new = StoredEvent(**{**new.__dict__, "hash": hash_of(new, prev)})
            if new.hash != event.hash or changed:
                conn.execute(update(events).where(events.c.position == event.position)
                             .values(**changed, prev_hash=new.prev_hash, hash=new.hash))
                mapping.append({"stream_id": stream_id, "version": event.version, "old_hash": event.hash,
                                "new_hash": new.hash, "reseal_id": reseal_id})
                sealed_data[event.event_id] = data
            rewritten.append(new)
            prev = new.hash
        record = replay(stream_id, rewritten)
        conn.execute(update(case_studies).where(case_studies.c.id == stream_id).values(**state_row(record, prev)))
        heads.append({"id": stream_id, "version": stream[-1].version, "old_head": stream[-1].hash, "new_head": prev})
    for start in range(0, len(mapping), 1000):
        conn.execute(insert(chain_reseals), mapping[start:start + 1000])
    _put_back_triggers(conn)
    _seal_outbox(conn, sealed_data)
    _rebuild_projections(conn)
    body = {"id": reseal_id, "created_at": now.isoformat(), "reason": "personal fields sealed (migration 0006)",
            "streams": heads, "events_resealed": len(mapping),
            "mapping_sha256": hashlib.sha256(canonical_json(
                [[m["stream_id"], m["version"], m["old_hash"], m["new_hash"]] for m in mapping])).hexdigest()}
    receipt = {**body, "signature": keyring.sign(canonical_json(body))}
    conn.execute(insert(reseals).values(id=reseal_id, created_at=now, receipt=receipt))
    return receipt


def _sealed(sealer: Sealer, stream_id: str, event: StoredEvent, account: str | None) -> NewEvent | None:
    """The event as an append would store it now, its personal fields sealed (None: sealed already)."""
    for field in PERSONAL_FIELDS[event.type]:
        value = get_path(event.data, field.path)
        if isinstance(value, str) and TOKEN.fullmatch(value):
            return None
    asked = NewEvent(event.type, dict(event.data), correlation_id=event.correlation_id,
                     causation_id=event.causation_id, on_behalf_of=event.on_behalf_of)
    return sealer.seal(stream_id, [asked], lambda: account)[0]


def _lift_triggers(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
    else:
        for name in _SQLITE_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")


def _put_back_triggers(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER events_append_only")
    else:
        for statement in _SQLITE_TRIGGERS.values():
            conn.exec_driver_sql(statement)


def _seal_outbox(conn: Connection, sealed_data: dict[str, Any]) -> None:
    """Webhook messages carry their event's data: they get its sealed form."""
    if not sealed_data:
        return
    ids = list(sealed_data)
    for start in range(0, len(ids), 500):
        rows = conn.execute(select(outbox.c.id, outbox.c.event_id, outbox.c.payload)
                            .where(outbox.c.kind == "event", outbox.c.event_id.in_(ids[start:start + 500])))
        for row in rows.all():
            payload = orjson.loads(orjson.dumps(row.payload))
            if isinstance(payload.get("data"), dict) and "data" in payload["data"]:
                payload["data"]["data"] = sealed_data[row.event_id]
                conn.execute(update(outbox).where(outbox.c.id == row.id).values(payload=payload))


def _rebuild_projections(conn: Connection) -> None:
    """Empty every projection table and set the checkpoint back to the start: the projections worker
    folds the (sealed) store again from position 0 when it next runs."""
    from service.projections.tables import PROJECTION_TABLES, projection_checkpoints

    for table in PROJECTION_TABLES:
        conn.execute(delete(table))
    conn.execute(update(projection_checkpoints).values(position=0, event_recorded_at=None))


def trusted_reseals(engine: Engine, keyring: Keyring) -> dict[tuple[str, int], tuple[str, str]]:
    """Every kept reseal whose receipt's HMAC checks out under the master key and whose old-to-new
    list is the one the receipt hashed: (stream id, version) -> (old hash, new hash). A row added to
    ``chain_reseals`` by hand, or a receipt edited, is left out, so it cannot excuse a rewrite."""
    trusted: dict[tuple[str, int], tuple[str, str]] = {}
    with engine.connect() as conn:
        for (receipt,) in conn.execute(select(reseals.c.receipt)):
            body = {key: value for key, value in receipt.items() if key != "signature"}
            if not hmac.compare_digest(receipt.get("signature", ""), keyring.sign(canonical_json(body))):
                continue
            rows = conn.execute(select(chain_reseals.c.stream_id, chain_reseals.c.version, chain_reseals.c.old_hash,
                                       chain_reseals.c.new_hash)
                                .where(chain_reseals.c.reseal_id == receipt["id"])
                                .order_by(chain_reseals.c.stream_id, chain_reseals.c.version)).all()
            if hashlib.sha256(canonical_json([list(row) for row in rows])).hexdigest() == body["mapping_sha256"]:
                trusted.update({(row.stream_id, row.version): (row.old_hash, row.new_hash) for row in rows})
    return trusted
