"""What a state machine per record would cost, against the one shared machine we use.

Run: .venv/bin/python -m bench.machine_cost
"""
from __future__ import annotations

import timeit
from datetime import UTC, datetime

from transitions import Machine

from service.domain import CaseStudy, apply
from service.domain.machine import TRANSITIONS
from service.domain.model import PendingEvent, Status

NOW = datetime.now(UTC)
COMMITTED = {"account": {"id": "a", "name": "A"}, "csm": "Dana", "champion": {"name": "Jo", "title": "VP"},
             "use_case": "u", "close_date": "2026-10-01"}


def per_record_machine() -> None:
    record = CaseStudy(id="r")
    Machine(model=record, states=[s.value for s in Status], initial=Status.NEW.value,
            transitions=TRANSITIONS, auto_transitions=False, send_event=True)


def shared_machine_decision() -> None:
    record = CaseStudy(id="r")
    apply(record, PendingEvent("committed", COMMITTED, 1, NOW, NOW))
    apply(record, PendingEvent("started", {}, 2, NOW, NOW))


def main() -> None:
    n = 2000
    build = min(timeit.repeat(per_record_machine, number=n, repeat=5)) / n * 1e6
    decide = min(timeit.repeat(shared_machine_decision, number=n, repeat=5)) / n * 1e6
    print(f"building a Machine for one record:            {build:8.1f} µs")
    print(f"two events through the shared machine:        {decide:8.1f} µs (new record, committed + started)")
    print(f"per-record construction would cost {build / decide:.0f}x the decisions themselves")


if __name__ == "__main__":
    main()
