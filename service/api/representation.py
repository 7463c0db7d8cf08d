"""How records and events look over HTTP."""
from __future__ import annotations

from service.domain import STATUS_LABELS, CaseStudy, allowed_events, readiness
from service.times import iso


def record_json(record: CaseStudy, kpi_threshold_pct: float) -> dict:
    """The current state of a record as API.md describes it."""
    return {
        "id": record.id,
        "status": record.state,
        "status_label": STATUS_LABELS[record.state],
        "version": record.version,
        "account": record.account,
        "csm": record.csm,
        "champion": record.champion,
        "use_case": record.use_case,
        "close_date": record.close_date,
        "deal_id": record.deal_id,
        "anonymized": record.anonymized,
        "industry_description": record.industry_description,
        "msa_restricted": record.msa_restricted,
        "approvals": record.approvals,
        "approvers": record.approvers,
        "approval_round": record.approval_round,
        "approval_requested_at": iso(record.approval_requested_at),
        "changes_requested": record.changes_requested,
        "draft_url": record.draft_url,
        "hold": ({"reason": record.hold_reason, "revisit_on": record.revisit_on,
                  "held_from": record.held_from, "held_at": iso(record.held_at)}
                 if record.held_from else None),
        "declined_reason": record.declined_reason,
        "published_url": record.published_url,
        "published_at": iso(record.published_at),
        "allowed_events": allowed_events(record.state),
        "committed_at": iso(record.committed_at),
        "entered_status_at": iso(record.entered_status_at),
        "last_activity_at": iso(record.last_activity_at),
        "last_event_type": record.last_event_type,
        "metrics": {**record.metrics, "lower_is_better": record.lower_is_better},
        "quotes": record.quotes,
        "quote_count": record.quote_count,
        "nps": record.nps,
        "shared_formats": record.shared_formats,
        "views": record.views,
        "readiness": readiness(record, kpi_threshold_pct).to_dict(),
    }
