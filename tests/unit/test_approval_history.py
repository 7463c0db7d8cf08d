"""Approval rounds as the events tell them, and the hash chain's checks, without a database."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.approvals import approval_rounds
from service.events.chain import GENESIS, check_chain, event_hash, hash_of

T0 = datetime(2026, 10, 1, 9, tzinfo=UTC)


@dataclass(frozen=True)
class E:
    type: str
    data: dict[str, Any]
    version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str = "crm"
    on_behalf_of: str | None = None
    event_id: str = ""
    stream_id: str = "s"
    correlation_id: str | None = None
    causation_id: str | None = None
    prev_hash: str = ""
    hash: str = ""


def stream(*steps: tuple[str, dict, float]) -> list[E]:
    out = []
    for version, (kind, data, day) in enumerate(steps, start=1):
        at = T0 + timedelta(days=day)
        out.append(E(kind, data, version, at, at + timedelta(minutes=5), event_id=f"e{version}"))
    return out


def test_each_round_records_its_request_answers_times_and_outcome():
    rounds = approval_rounds(stream(
        ("committed", {}, 0), ("started", {}, 1),
        ("approval_requested", {"approvers": ["marketing", "legal"], "draft_url": "https://d.example/1"}, 2),
        ("approval_granted", {"role": "marketing", "approver": "Sam"}, 3),
        ("changes_requested", {"role": "legal", "comment": "no revenue"}, 6),
        ("approval_requested", {"approvers": ["legal"]}, 8),
        ("held", {"reason": "reorg"}, 9), ("resumed", {}, 12),
        ("approval_granted", {"role": "legal", "approver": "Kim"}, 13),
        ("published", {"url": "https://x.example"}, 14)))
    first, second = rounds
    assert (first.number, first.outcome, first.draft_url) == (1, "changes_requested", "https://d.example/1")
    assert [(d.role, d.decision, d.took_seconds / 86400) for d in first.decisions] == [
        ("marketing", "granted", 1.0), ("legal", "changes_requested", 4.0)]
    assert first.ended.version == 5 and first.pending() == []
    assert (second.number, second.outcome, second.ended.version) == (2, "published", 10)
    assert second.decisions[0].took_seconds == 5 * 86400
    assert second.holds[0]["reason"] == "reorg" and second.holds[0]["resumed"].version == 8


def test_an_open_round_names_who_has_not_answered_and_a_hold_pauses_it():
    rounds = approval_rounds(stream(
        ("committed", {}, 0), ("started", {}, 1),
        ("approval_requested", {"approvers": ["marketing", "legal", "executive_sponsor"]}, 2),
        ("approval_granted", {"role": "legal", "approver": "Kim"}, 3),
        ("held", {"reason": "budget"}, 4)))
    [only] = rounds
    assert only.outcome == "held" and only.pending() == ["marketing", "executive_sponsor"]


def test_a_declined_record_ends_its_round_and_later_events_do_not_reopen_it():
    [only] = approval_rounds(stream(
        ("committed", {}, 0), ("started", {}, 1), ("approval_requested", {"approvers": ["legal"]}, 2),
        ("declined", {"reason": "no"}, 3)))
    assert only.outcome == "declined" and only.ended.version == 4


def chained(events: list[E]) -> list[E]:
    prev, out = GENESIS, []
    for event in events:
        event = replace(event, prev_hash=prev)
        event = replace(event, hash=hash_of(event, prev))
        out.append(event)
        prev = event.hash
    return out


def test_an_untouched_chain_is_intact_and_reports_its_head():
    events = chained(stream(("committed", {"a": 1}, 0), ("started", {}, 1)))
    check = check_chain("s", events)
    assert check.intact and check.head_hash == events[-1].hash and check.version == 2


def test_an_edited_event_breaks_the_chain_at_its_version():
    events = chained(stream(("committed", {"a": 1}, 0), ("started", {}, 1), ("held", {"reason": "x"}, 2)))
    events[1] = replace(events[1], data={"sneaky": True})
    check = check_chain("s", events)
    assert not check.intact and check.broken_version == 2 and check.problem == "content does not match its hash"
    assert check.found_hash == events[1].hash and check.expected_hash != events[1].hash


def test_a_removed_event_breaks_the_chain():
    events = chained(stream(("committed", {}, 0), ("started", {}, 1), ("held", {"reason": "x"}, 2)))
    check = check_chain("s", [events[0], events[2]])
    assert not check.intact and check.broken_version == 3


def test_the_hash_is_stable_whatever_the_order_of_keys_or_the_form_of_numbers():
    common = dict(stream_id="s", version=1, type="metrics_recorded", actor="a", on_behalf_of=None,
                  recorded_at=T0, occurred_at=T0, event_id="e", correlation_id=None, causation_id=None,
                  prev_hash=GENESIS)
    assert event_hash(data={"x": 30, "y": 0.5}, **common) == event_hash(data={"y": 0.5, "x": 30.0}, **common)
    # The canonical form is fixed: this exact text is what gets hashed, whatever library versions.
    text = ('{"actor":"a","causation_id":null,"correlation_id":null,"data":{"x":30,"y":0.5},"event_id":"e",'
            '"occurred_at":"2026-10-01T09:00:00.000000Z","on_behalf_of":null,"prev_hash":"' + GENESIS + '",'
            '"recorded_at":"2026-10-01T09:00:00.000000Z","stream_id":"s","type":"metrics_recorded","version":1}')
    assert event_hash(data={"x": 30, "y": 0.5}, **common) == hashlib.sha256(text.encode()).hexdigest()


def _random_value(rng, depth=0):
    kind = rng.choice(["str", "int", "float", "bool", "none", "dict", "list"] if depth < 3 else
                      ["str", "int", "float", "bool", "none"])
    alphabet = 'aZ09 _-\\"\n\tés\u2603\U0001F600\u2028\uffff\ue000\x01'
    if kind == "str":
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    if kind == "int":
        return rng.randint(-(2**53) + 1, 2**53 - 1) if rng.random() < 0.3 else rng.randint(-1000, 1000)
    if kind == "float":
        value = rng.choice([1, -1]) * rng.random() * 10 ** rng.uniform(-12, 15)
        return round(value, rng.randint(0, 8)) if rng.random() < 0.3 else value
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def test_the_canonical_form_is_byte_for_byte_the_rfc_8785_reference():
    import random

    import rfc8785

    from service.events.chain import canonical_json

    rng = random.Random(8785)
    for _ in range(20000):
        value = _random_value(rng)
        assert canonical_json(value) == rfc8785.dumps(value), value
