"""Valid event data for every type, and the paths that bring a record into each status."""
from __future__ import annotations

from typing import Any

COMMITTED = {
    "account": {"id": "acc-1", "name": "Acme Air"},
    "csm": "Dana",
    "champion": {"name": "Jo Park", "title": "VP Operations"},
    "use_case": "faster onboarding",
    "close_date": "2026-10-01",
}

VALID_DATA: dict[str, dict[str, Any]] = {
    "committed": COMMITTED,
    "started": {},
    "approval_requested": {"approvers": ["marketing", "legal"], "draft_url": "https://docs.example/d/1"},
    "approval_granted": {"role": "marketing", "approver": "Sam Lee"},
    "changes_requested": {"role": "legal", "comment": "remove the revenue figure"},
    "published": {"url": "https://example.com/stories/acme"},
    "held": {"reason": "customer reorg", "revisit_on": "2027-01-15"},
    "resumed": {},
    "declined": {"reason": "new CEO says no"},
    "reassigned": {"csm": "Robin"},
    "metrics_recorded": {"kind": "baseline", "metrics": {"onboarding_days": 30}},
    "quote_added": {"text": "We onboard in a week now.", "speaker": "Jo Park"},
    "nps_recorded": {"score": 9, "respondent": "Jo Park"},
    "shared_with_champion": {"formats": ["pdf", "link"]},
    "views_reported": {"views": 120},
}

# The events (type, data) that bring a new record into each status.
PATHS: dict[str, list[tuple[str, dict]]] = {
    "new": [],
    "not_started": [("committed", COMMITTED)],
    "in_progress": [("committed", COMMITTED), ("started", {})],
    "awaiting_customer_approval": [("committed", COMMITTED), ("started", {}),
                                   ("approval_requested", {"approvers": ["marketing"]})],
    "published": [("committed", COMMITTED), ("started", {}),
                  ("approval_requested", {"approvers": ["marketing"]}),
                  ("approval_granted", {"role": "marketing", "approver": "Sam Lee"}),
                  ("published", {"url": "https://example.com/stories/acme"})],
    "on_hold": [("committed", COMMITTED), ("started", {}), ("held", {"reason": "customer reorg"})],
    "declined": [("committed", COMMITTED), ("declined", {"reason": "backed out"})],
}

# Data that passes the guards in the status each path leads to.
GUARD_PASSING_DATA: dict[tuple[str, str], dict] = {
    ("awaiting_customer_approval", "approval_granted"): {"role": "marketing", "approver": "Sam Lee"},
    ("awaiting_customer_approval", "changes_requested"): {"role": "marketing", "comment": "shorter"},
    ("awaiting_customer_approval", "published"): {"url": "https://example.com/x"},
}


def data_for(status: str, event_type: str) -> dict:
    """Data for ``event_type`` that no guard refuses when the record is in ``status``."""
    return GUARD_PASSING_DATA.get((status, event_type), VALID_DATA[event_type])
