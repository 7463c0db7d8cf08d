"""The messages the service sends: Slack's (mrkdwn text) and CloudEvents 1.0 for webhooks."""
from __future__ import annotations

from typing import Any, Protocol, Sequence

from service.domain import CaseStudy, Readiness
from service.events.event import Decided
from service.links import Links

CLOUDEVENT_TYPE_PREFIX = "com.casestudies.casestudy."


def slack_escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (``&``, ``<`` and ``>`` are its markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class AboutRecord(Protocol):
    """What a message names a record by: a record, or a stuck item."""

    id: str
    account: dict[str, str] | None


def _customer(record: AboutRecord) -> str:
    return slack_escape(record.account["name"] if record.account else record.id)


def _link(url: str, label: str) -> str:
    return f"<{url}|{slack_escape(label)}>"


def _record_link(record: AboutRecord, links: Links) -> str:
    return _link(links.record(record.id), record.id)


def record_created_message(record: CaseStudy, links: Links) -> dict[str, Any]:
    """Playbook section 8: customer name, CSM assigned, link to the record."""
    csm = slack_escape(record.csm) if record.csm else "nobody yet"
    return {"text": f"New case study: *{_customer(record)}*, CSM {csm}. {_record_link(record, links)}"}


def new_candidate_message(record: CaseStudy, links: Links, ready: Readiness) -> dict[str, Any]:
    """The customer, the best metric's improvement, NPS, the CSM and a link."""
    csm = slack_escape(record.csm) if record.csm else "nobody yet"
    return {"text": f"New case study candidate: *{_customer(record)}*: {slack_escape(ready.best_metric or '')} "
                    f"{ready.kpi_improvement_pct:g}% better, NPS {ready.nps}; CSM {csm}. {_record_link(record, links)}"}


STUCK_LINES = 20  # records named in one stuck message; the rest are counted


def records_stuck_message(found: Sequence[Any], links: Links) -> dict[str, Any]:
    """One message for the findings a scan found new (stuck items: id, account, csm, finding): each
    record with its reason."""
    count = len(found)
    head = f"{count} case {'study' if count == 1 else 'studies'} became stuck:"
    lines = [f"• *{_customer(item)}* ({slack_escape(item.csm or 'no CSM')}): {slack_escape(item.finding.reason)} "
             f"{_record_link(item, links)}" for item in found[:STUCK_LINES]]
    if count > STUCK_LINES:
        lines.append(f"…and {count - STUCK_LINES} more: {_link(links.stuck_list(), 'the stuck list')}")
    return {"text": "\n".join([head, *lines])}


def cloud_event(event: Decided, links: Links) -> dict[str, Any]:
    """A CloudEvents 1.0 event (structured JSON mode) for a stored event."""
    return {
        "specversion": "1.0",
        "id": event.event_id,
        "source": links.records(),
        "type": CLOUDEVENT_TYPE_PREFIX + event.type,
        "subject": event.stream_id,
        "time": event.occurred_at.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "id": event.stream_id, "version": event.version, "type": event.type, "data": event.data,
            "status": event.status, "actor": event.actor, "on_behalf_of": event.on_behalf_of,
            "occurred_at": event.occurred_at.isoformat(), "recorded_at": event.recorded_at.isoformat(),
            "correlation_id": event.correlation_id, "causation_id": event.causation_id,
        },
    }
