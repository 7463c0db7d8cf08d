"""How each event's data changes a record, once the machine has accepted it."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from service.domain.model import QUOTES_KEPT, SYSTEM_EVENT_TYPES, CaseStudy, Event, Status


def _committed(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.account = dict(data["account"])
    record.csm = data["csm"]
    record.champion = dict(data["champion"])
    record.use_case = data["use_case"]
    record.close_date = data["close_date"]
    record.deal_id = data.get("deal_id")
    record.anonymized = bool(data.get("anonymized", False))
    record.industry_description = data.get("industry_description")
    record.msa_restricted = bool(data.get("msa_restricted", False))


def _approval_requested(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.approval_round += 1
    record.approvals = {role: "pending" for role in data["approvers"]}
    record.approvers = {}
    record.changes_requested = None
    record.draft_url = data.get("draft_url")


def _approval_granted(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.approvals[data["role"]] = "granted"
    record.approvers[data["role"]] = data["approver"]


def _changes_requested(record: CaseStudy, data: Mapping[str, Any]) -> None:
    # The round is over: the answers given stay visible, nobody is pending any more, and the
    # next approval_requested starts a new round.
    record.approvals[data["role"]] = "changes_requested"
    record.approvals = {role: answer for role, answer in record.approvals.items() if answer != "pending"}
    if data.get("approver"):
        record.approvers[data["role"]] = data["approver"]
    record.changes_requested = {"round": record.approval_round, "role": data["role"],
                                "comment": data["comment"], "approver": data.get("approver")}


def _published(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.published_url = data["url"]


def _held(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.hold_reason = data["reason"]
    record.revisit_on = data.get("revisit_on")


def _resumed(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.held_from = None
    record.held_at = None
    record.hold_reason = None
    record.revisit_on = None


def _declined(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.declined_reason = data["reason"]


def _reassigned(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.csm = data["csm"]


def _metrics_recorded(record: CaseStudy, data: Mapping[str, Any]) -> None:
    # float(): PostgreSQL's JSONB gives whole numbers back as int, SQLite as float.
    record.metrics[data["kind"]].update({name: float(value) for name, value in data["metrics"].items()})
    for name in data.get("lower_is_better", ()):
        if name not in record.lower_is_better:
            record.lower_is_better.append(name)


def _quote_added(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.quotes = [*record.quotes[-(QUOTES_KEPT - 1):], {"text": data["text"], "speaker": data["speaker"]}]
    record.quote_count += 1


def _nps_recorded(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.nps = {"score": data["score"], "respondent": data.get("respondent")}


def _shared_with_champion(record: CaseStudy, data: Mapping[str, Any]) -> None:
    for fmt in data["formats"]:
        if fmt not in record.shared_formats:
            record.shared_formats.append(fmt)


def _views_reported(record: CaseStudy, data: Mapping[str, Any]) -> None:
    record.views = data["views"]


def _nothing(record: CaseStudy, data: Mapping[str, Any]) -> None:
    return None


_EVOLVERS: dict[str, Callable[[CaseStudy, Mapping[str, Any]], None]] = {
    "committed": _committed,
    "started": _nothing,
    "approval_requested": _approval_requested,
    "approval_granted": _approval_granted,
    "changes_requested": _changes_requested,
    "published": _published,
    "held": _held,
    "resumed": _resumed,
    "declined": _declined,
    "reassigned": _reassigned,
    "metrics_recorded": _metrics_recorded,
    "quote_added": _quote_added,
    "nps_recorded": _nps_recorded,
    "shared_with_champion": _shared_with_champion,
    "views_reported": _views_reported,
    "personal_data_erased": _nothing,  # the data stays, unreadable: its key is gone
}


def evolve(record: CaseStudy, event: Event, status_before: str) -> None:
    """Fold an accepted event into ``record``; the machine has already set its status."""
    if event.type == "held":
        record.held_from = status_before
        record.held_at = event.occurred_at
    _EVOLVERS[event.type](record, event.data)
    record.version = event.version
    if event.type in SYSTEM_EVENT_TYPES:
        return  # no activity: the record did not move
    record.last_activity_at = event.occurred_at
    record.last_event_type = event.type
    if event.type == "committed":
        record.committed_at = event.occurred_at
    if record.state != status_before:
        record.entered_status_at = event.occurred_at
        if record.state == Status.AWAITING_CUSTOMER_APPROVAL.value and event.type == "approval_requested":
            record.approval_requested_at = event.occurred_at
        if record.state == Status.PUBLISHED.value:
            record.published_at = event.occurred_at
