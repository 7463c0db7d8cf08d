"""Erasure (GDPR Art. 17) and access (Art. 15) requests, and the receipts erasure keeps."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

import orjson
import structlog
from sqlalchemy import Engine, Text, cast, delete, insert, select, update

from service.events.chain import canonical_json
from service.events.db import transaction
from service.events.errors import IdempotencyConflict
from service.events.event import NewEvent
from service.events.store import EventStore
from service.events.tables import case_studies, events
from service.notifications.tables import outbox, webhook_subscriptions
from service.people.keys import TOKEN, TOKEN_PREFIX, Keyring, marker, placeholder
from service.people.reveal import Opener
from service.people.stored import trusted_reseals
from service.people.subjects import Sealer, Subjects
from service.people.tables import data_subjects, erasures, subject_handles
from service.times import utcnow

log = structlog.get_logger("casestudies.people")

ERASED_EVENT = "personal_data_erased"
_ERASURE_EVENTS = uuid.UUID("6b1f7a52-3c1e-4f0e-9a55-5f0d8f1f2a10")  # names each erasure event's id


class PersonNotFound(LookupError):
    """No personal data is held about the person asked for, and none was erased."""


@dataclass(frozen=True)
class Person:
    """How a request names a person: by email, or by name within an account."""

    email: str | None = None
    name: str | None = None
    account_id: str | None = None

    @classmethod
    def asked(cls, email: str | None, name: str | None, account_id: str | None) -> "Person":
        """The person a request names: by email, or by name with an account; ValueError otherwise."""
        if email is not None and (name is not None or account_id is not None):
            raise ValueError("give an email, or a name with an account_id, not both")
        if email is None and (name is None or account_id is None):
            raise ValueError("give an email, or a name with an account_id (a person with no email)")
        return cls(email=email, name=name, account_id=account_id)

    @property
    def asked_by(self) -> str:
        return "email" if self.email is not None else "name within account"


@dataclass(frozen=True)
class Held:
    """One event's fields that hold a person's data."""

    stream_id: str
    version: int
    type: str
    occurred_at: datetime
    fields: tuple[tuple[str, str], ...]  # (path, token)


class People:
    """Personal data: sealing on append, revealing on the way out, erasure and access requests."""

    def __init__(self, engine: Engine, store_of: Callable[[], EventStore], master_key: str, *,
                 cache_seconds: float = 30.0, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.keyring = Keyring(master_key)
        self.subjects = Subjects(engine, self.keyring, cache_seconds=cache_seconds, clock=clock)
        self.sealer = Sealer(self.subjects)
        self._store_of = store_of  # the store is built with this sealer, so it is found late
        self.clock = clock

    def opener(self) -> Opener:
        """An opener for one answer."""
        return Opener(self.subjects)

    def trusted_reseals(self) -> dict[tuple[str, int], tuple[str, str]]:
        """The reseals of migration 0006 whose signed receipts check out, for ``audit verify --digest``."""
        return trusted_reseals(self.engine, self.keyring)

    def handle(self, person: Person) -> str:
        return self.keyring.handle(email=person.email, name=person.name, account_id=person.account_id)

    # -- where a person's data is --------------------------------------------------------
    def held(self, subject_id: str) -> list[Held]:
        """Every stored event field that holds the person's data, in store order (a scan of the events)."""
        prefix = f"{TOKEN_PREFIX}{subject_id}."
        query = (select(events.c.stream_id, events.c.version, events.c.type, events.c.occurred_at, events.c.data)
                 .where(cast(events.c.data, Text).like(marker(subject_id), escape="\\"))
                 .order_by(events.c.stream_id, events.c.version))
        with self.engine.connect() as conn:
            return [Held(row.stream_id, row.version, row.type, row.occurred_at,
                         tuple((path, token) for path, token in _tokens(row.data) if token.startswith(prefix)))
                    for row in conn.execute(query)]

    def _messages(self, subject_id: str) -> list[Any]:
        query = (select(outbox.c.id, outbox.c.destination, outbox.c.subscription_id, outbox.c.kind,
                        outbox.c.stream_id, outbox.c.event_id, outbox.c.status, outbox.c.sent_at, outbox.c.payload,
                        webhook_subscriptions.c.url)
                 .outerjoin(webhook_subscriptions, webhook_subscriptions.c.id == outbox.c.subscription_id)
                 .where(cast(outbox.c.payload, Text).like(marker(subject_id), escape="\\")).order_by(outbox.c.id))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    # -- access ----------------------------------------------------------------------------
    def export(self, person: Person) -> dict[str, Any]:
        """Everything held about a person, decrypted: each record and field, the messages waiting to
        go out with it, and the receipts of earlier erasures. PersonNotFound when there is nothing."""
        handle = self.handle(person)
        subject_id = self.subjects.find(handle)
        receipts = self.receipts(handle=handle)
        if subject_id is None and not receipts:
            raise PersonNotFound(person.asked_by)
        records: dict[str, dict[str, Any]] = {}
        messages = []
        if subject_id is not None:
            opener = self.opener()
            for item in self.held(subject_id):
                record = records.setdefault(item.stream_id, {"id": item.stream_id, "fields": []})
                record["fields"] += [{"version": item.version, "type": item.type, "field": path,
                                      "occurred_at": item.occurred_at.isoformat(), "value": opener.text(token)}
                                     for path, token in item.fields]
            self._add_accounts(records)
            messages = [{"id": row.id, "destination": row.destination, "status": row.status,
                         "stream_id": row.stream_id, "event_id": row.event_id}
                        for row in self._messages(subject_id)]
        return {"asked_by": person.asked_by, "subject": subject_id, "exported_at": self.clock().isoformat(),
                "records": list(records.values()), "outbox": messages,
                "erasures": [receipt["id"] for receipt in receipts]}

    def _add_accounts(self, records: dict[str, dict[str, Any]]) -> None:
        if not records:
            return
        with self.engine.connect() as conn:
            rows = conn.execute(select(case_studies.c.id, case_studies.c.account_id, case_studies.c.account_name)
                                .where(case_studies.c.id.in_(list(records))))
            for row in rows:
                records[row.id]["account"] = {"id": row.account_id, "name": row.account_name}

    # -- erasure ---------------------------------------------------------------------------
    def erase(self, person: Person, *, reason: str, actor: str) -> tuple[dict[str, Any], bool]:
        """Erase a person: destroy their key, append ``personal_data_erased`` to every record that
        held their data, redact the messages not yet sent and purge those sent. Returns the receipt
        and whether this call erased (False: a retry, answered with the receipt kept before, the
        erasure finished first if it had been cut short). PersonNotFound when nothing is held."""
        handle = self.handle(person)
        subject_id = self.subjects.find(handle)
        if subject_id is None:
            kept = self.receipts(handle=handle)
            if not kept:
                raise PersonNotFound(person.asked_by)
            return self._complete(kept[0]), False
        now = self.clock()
        receipt = _with_messages(_with_records({
            "id": str(uuid.uuid4()), "subject": subject_id, "asked_by": person.asked_by, "reason": reason,
            "requested_by": actor, "erased_at": now.isoformat(), "completed_at": None,
            "key_destroyed": True, "records": [],
            "outbox": {"redacted": [], "purged": []}, "beyond_reach": [],
        }, self.held(subject_id)), self._messages(subject_id))
        with transaction(self.engine) as conn:
            destroyed = conn.execute(update(data_subjects)
                                     .where(data_subjects.c.id == subject_id, data_subjects.c.wrapped_key.is_not(None))
                                     .values(wrapped_key=None, erased_at=now)).rowcount
            if destroyed != 1:  # another request erased the person meanwhile: answer with its receipt
                conn.rollback()
                return self._complete(self.receipts(subject_id=subject_id)[0]), False
            conn.execute(delete(subject_handles).where(subject_handles.c.subject_id == subject_id))
            conn.execute(insert(erasures).values(id=receipt["id"], subject_id=subject_id, handle=handle,
                                                 requested_by=actor, reason=reason, erased_at=now, receipt=receipt))
        self.subjects.forget(subject_id)
        log.info("personal_data_erased", erasure=receipt["id"], subject=subject_id, records=len(receipt["records"]),
                 outbox_redacted=len(receipt["outbox"]["redacted"]), outbox_purged=len(receipt["outbox"]["purged"]),
                 actor=actor)
        return self._complete(receipt), True

    def _complete(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Finish an erasure whose key is destroyed: its events appended, the outbox cleaned. Each step
        may run again (the events' ids are fixed by the erasure), so a cut-short erasure is finished
        by a retry."""
        if receipt.get("completed_at"):
            return receipt
        # Read again now the key is gone: a writer that still held the key (SUBJECT_CACHE_SECONDS) may
        # have sealed one more event under it meanwhile; its record is noted and listed too.
        receipt = _with_records(receipt, self.held(receipt["subject"]))
        store = self._store_of()
        erased_on = datetime.fromisoformat(receipt["erased_at"]).date().isoformat()
        versions = {}
        for record in receipt["records"]:
            event = NewEvent(ERASED_EVENT, {"subject": receipt["subject"], "erasure": receipt["id"],
                                            "erased_on": erased_on, "fields": record["fields"]},
                             event_id=str(uuid.uuid5(_ERASURE_EVENTS, f"{receipt['id']}/{record['id']}")))
            try:
                versions[record["id"]] = store.append(record["id"], [event], actor=receipt["requested_by"]).version
            except IdempotencyConflict:  # appended by a first try that listed fewer fields: it stands
                versions[record["id"]] = self._version_of(event.event_id)
        # The outbox as it stands now the key is gone: a message sent meanwhile is listed too (with
        # the data, if it went out just before the key was destroyed).
        messages = self._messages(receipt["subject"])
        receipt = _with_messages(receipt, messages)
        self._clean_outbox(receipt, messages)
        done = {**receipt, "completed_at": self.clock().isoformat(),
                "records": [{**record, "erasure_event_version": versions.get(record["id"])}
                            for record in receipt["records"]]}
        done["signature"] = self.keyring.sign(canonical_json({k: v for k, v in done.items() if k != "signature"}))
        with transaction(self.engine) as conn:
            conn.execute(update(erasures).where(erasures.c.id == receipt["id"])
                         .values(completed_at=datetime.fromisoformat(done["completed_at"]), receipt=done))
        return done

    def _version_of(self, event_id: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(events.c.version).where(events.c.event_id == event_id)).scalar()

    def _clean_outbox(self, receipt: dict[str, Any], messages: list[Any]) -> None:
        """Sent messages that held the person's data are deleted; the others have it replaced by the
        placeholder, so they go out without it."""
        subject_id = receipt["subject"]
        text = placeholder(datetime.fromisoformat(receipt["erased_at"]))
        with transaction(self.engine) as conn:
            for row in messages:
                if row.status == "sent":
                    conn.execute(delete(outbox).where(outbox.c.id == row.id))
                else:
                    redacted = TOKEN.sub(lambda m: text if m.group(1) == subject_id else m.group(0),
                                         orjson.dumps(row.payload).decode())
                    conn.execute(update(outbox).where(outbox.c.id == row.id).values(payload=orjson.loads(redacted)))

    def receipts(self, *, handle: str | None = None, subject_id: str | None = None,
                 erasure_id: str | None = None) -> list[dict[str, Any]]:
        """Erasure receipts, the latest first."""
        query = select(erasures.c.receipt).order_by(erasures.c.erased_at.desc())
        if handle is not None:
            query = query.where(erasures.c.handle == handle)
        if subject_id is not None:
            query = query.where(erasures.c.subject_id == subject_id)
        if erasure_id is not None:
            query = query.where(erasures.c.id == erasure_id)
        with self.engine.connect() as conn:
            return [row.receipt for row in conn.execute(query)]


def _with_records(receipt: dict[str, Any], held: list[Held]) -> dict[str, Any]:
    """The receipt with the fields of ``held`` added to the records it lists (``version:path`` each)."""
    records = {record["id"]: list(record["fields"]) for record in receipt["records"]}
    for item in held:
        fields = records.setdefault(item.stream_id, [])
        fields += [name for name in (f"{item.version}:{path}" for path, _token in item.fields) if name not in fields]
    return {**receipt, "records": [{"id": stream_id, "fields": fields} for stream_id, fields in records.items()]}


def _with_messages(receipt: dict[str, Any], messages: list[Any]) -> dict[str, Any]:
    """The receipt with ``messages`` (outbox rows holding the person's data) added to what it lists:
    unsent ones redacted, sent ones purged, and those sent listed as copies beyond reach."""
    outbox_lists = {key: list(ids) for key, ids in receipt["outbox"].items()}
    beyond = list(receipt["beyond_reach"])
    for row in messages:
        listed = outbox_lists["purged" if row.status == "sent" else "redacted"]
        if row.id not in listed:
            listed.append(row.id)
        if row.status == "sent" and all(copy["message_id"] != row.id for copy in beyond):
            beyond.append({"destination": row.destination, "url": row.url, "message_id": row.id,
                           "stream_id": row.stream_id, "event_id": row.event_id,
                           "sent_at": row.sent_at.isoformat() if row.sent_at else None})
    return {**receipt, "outbox": outbox_lists, "beyond_reach": beyond}


def _tokens(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, token) of every sealed string in an event's data."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _tokens(value, f"{path}.{key}" if path else key)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _tokens(value, f"{path}.{index}")
    elif isinstance(data, str) and TOKEN.fullmatch(data):
        yield path, data
