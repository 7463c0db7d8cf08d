"""Deals from the CRM: a closed deal with an accepted case study commitment becomes a record.

One schema serves both intakes: the JSON a workflow tool posts to ``/integrations/deals`` and
the columns of a CRM export given to ``casestudies import deals``. It is lenient where such
tools are (numbers and booleans arrive as text, blank fields as empty strings, the
commitment as its label) and strict about everything it stores: the record's data goes
through the ``committed`` event's own schema.

A deal's record has an id derived from the deal id, so the same deal posted twice, or by two
tools at once, creates one record; the second answer names it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from service.domain import STATUS_LABELS, CaseStudy, path_to
from service.events.errors import StreamAlreadyExists
from service.events.event import NewEvent
from service.events.schemas import (
    DATA_SCHEMAS,
    Email,
    InvalidEvent,
    Name,
    Role,
    Text,
    error_list,
    is_valid_stream_id,
)
from service.events.store import EventStore

STREAM_PREFIX = "deal-"
COMMITMENTS = ("accepted", "declined", "not_discussed")  # what a deal says of a case study
DECISIONS = ("created", "exists", "not_created")  # what became of it here


def as_token(value: Any) -> Any:
    """A value as a code: ``Not discussed``, ``NOT_DISCUSSED`` and ``not-discussed`` are ``not_discussed``;
    ``In Progress`` is ``in_progress``."""
    if isinstance(value, str):
        return re.sub(r"[\s-]+", "_", value.strip().lower())
    return value


_DATE_FORMS = "must be a date (2026-10-01), an ISO-8601 time or Unix epoch milliseconds"


def _close_date(value: Any) -> Any:
    """A date, an ISO-8601 time (the date where it was given), or Unix epoch milliseconds (as HubSpot
    sends them; their date in UTC)."""
    if isinstance(value, str):
        value = value.strip()
        if re.fullmatch(r"\d{12,14}", value):
            value = int(value)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ].+", value):
            try:
                moment = datetime.fromisoformat(value.replace("z", "Z"))
            except ValueError:
                raise ValueError(_DATE_FORMS) from None
            return moment.date()  # the day where the time was given (with its offset: the CRM user's day)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 10**11 <= value < 10**14:
            raise ValueError("as a number must be Unix epoch milliseconds")
        return datetime.fromtimestamp(value / 1000, UTC).date()  # an instant: its date in UTC
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(_DATE_FORMS)
    return value


def _deal_id(value: Any) -> Any:
    """A deal id as text; a JSON number only when whole (8812, never 8812.0 or 8812.5)."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be text or a whole number")
        return str(int(value))
    return value


def _roles(value: Any) -> Any:
    """Approver roles as a list, or as text separated by commas or semicolons (a CSV cell)."""
    if isinstance(value, str):
        return [as_token(part) for part in re.split(r"[,;]", value) if part.strip()]
    return value


# A record kept elsewhere so far can be brought over in any status but Published (its approvals need names).
BackfillStatus = Literal[tuple(status for status in STATUS_LABELS if status != "published")]  # type: ignore[valid-type]


class InvalidDeal(InvalidEvent):
    """A deal that cannot be taken as sent; ``errors`` names each field at fault."""


class Deal(BaseModel):
    """A closed deal as a CRM workflow or export gives it (see the README for each field)."""

    # Both required (and so marked in the JSON Schema); checked in parse_deal, so that a blank one
    # is reported as missing.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True,
                              json_schema_extra={"required": ["deal_id", "case_study_commitment"]})

    deal_id: Annotated[Name | None, BeforeValidator(_deal_id)] = None
    case_study_commitment: Annotated[Literal[COMMITMENTS] | None,  # type: ignore[valid-type]
                                     BeforeValidator(as_token)] = None
    account_id: Name | None = None
    account_name: Name | None = None
    csm: Name | None = None
    close_date: Annotated[date | None, BeforeValidator(_close_date)] = None
    use_case: Text | None = None
    champion_name: Name | None = None
    champion_title: Name | None = None
    champion_email: Email | None = None
    msa_restricted: bool = False
    anonymized: bool = False
    industry_description: Name | None = None
    # Back-filling a record kept elsewhere so far (a CRM custom object): where it stands now.
    status: Annotated[BackfillStatus | None, BeforeValidator(as_token)] = None
    status_since: Annotated[date | None, BeforeValidator(_close_date)] = None
    approvers: Annotated[list[Role] | None, BeforeValidator(_roles)] = None
    hold_reason: Text | None = None
    revisit_on: Annotated[date | None, BeforeValidator(_close_date)] = None
    declined_reason: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_tools_send_it(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        # Tools send an unset CRM field as an empty string (or null): it means the field is absent.
        values = {name: value for name, value in values.items()
                  if value is not None and not (isinstance(value, str) and not value.strip())}
        # CRMs call the CSM the deal's owner.
        if "owner" in values:
            owner = values.pop("owner")
            if "csm" not in values:
                values["csm"] = owner
            elif str(owner).strip() != str(values["csm"]).strip():
                raise ValueError("owner and csm differ; send one of them")
        return values


ACCEPTED_REQUIRES = ("account_id", "account_name", "csm", "close_date", "use_case", "champion_name",
                     "champion_title")
FIELDS = tuple(Deal.model_fields) + ("owner",)


def parse_deal(values: Mapping[str, Any] | bytes) -> Deal:
    """Validate a deal (a mapping, or JSON text); raises InvalidDeal naming each field at fault
    (NotJson for text that is not JSON)."""
    try:
        deal = Deal.model_validate_json(values) if isinstance(values, bytes) else Deal.model_validate(values)
    except ValidationError as exc:
        errors = error_list(exc)
        for error in errors:
            if error["message"] == "Extra inputs are not permitted":
                error["message"] = f"unknown field; the fields are {', '.join(FIELDS)}"
        raise InvalidDeal(errors) from None
    errors = [{"field": name, "message": "is required"} for name in ("deal_id", "case_study_commitment")
              if getattr(deal, name) is None]
    if errors or deal.case_study_commitment != "accepted":
        if errors:
            raise InvalidDeal(errors)
        return deal
    errors = [{"field": name, "message": "is required when case_study_commitment is accepted"}
              for name in ACCEPTED_REQUIRES if getattr(deal, name) is None]
    needs = {"awaiting_customer_approval": "approvers", "on_hold": "hold_reason",
             "declined": "declined_reason"}.get(deal.status or "")
    if needs and getattr(deal, needs) in (None, []):
        errors.append({"field": needs, "message": f"is required for status {deal.status}"})
    if deal.status_since and deal.close_date and deal.status_since < deal.close_date:
        errors.append({"field": "status_since", "message": "is before close_date"})
    if deal.anonymized and not deal.industry_description:
        errors.append({"field": "industry_description", "message": "is required when anonymized is true"})
    if errors:
        raise InvalidDeal(errors)
    return deal


def stream_id_for(deal_id: str) -> str:
    """The record id of a deal: ``deal-<deal id>``, or ``deal-<hash>`` for ids outside the id form."""
    candidate = STREAM_PREFIX + deal_id
    if is_valid_stream_id(candidate):
        return candidate
    return STREAM_PREFIX + hashlib.sha256(deal_id.encode()).hexdigest()[:40]


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def history(deal: Deal, now: datetime) -> list[NewEvent]:
    """The events that bring an accepted deal's record to where it stands.

    The commitment happened when the deal closed (the start of its close date, UTC; now if the
    date lies ahead); a back-filled status was entered on ``status_since`` (default: the close
    date), each event's data checked by its event's schema."""
    committed_at = min(_start_of(deal.close_date), now)
    since = max(min(_start_of(deal.status_since), now), committed_at) if deal.status_since else committed_at
    data = {"account": {"id": deal.account_id, "name": deal.account_name}, "csm": deal.csm,
            "champion": {"name": deal.champion_name, "title": deal.champion_title, "email": deal.champion_email},
            "use_case": deal.use_case, "close_date": deal.close_date.isoformat(), "deal_id": deal.deal_id,
            "anonymized": deal.anonymized, "industry_description": deal.industry_description,
            "msa_restricted": deal.msa_restricted}
    status = deal.status or "not_started"
    entered = {"committed": data,
               "started": {},
               "approval_requested": {"approvers": deal.approvers},
               "held": {"reason": deal.hold_reason,
                        "revisit_on": deal.revisit_on.isoformat() if deal.revisit_on else None},
               "declined": {"reason": deal.declined_reason}}
    # The machine says which events lead there (On Hold: held straight from Not Started, so
    # resuming it returns there); the commitment is dated at the close, the rest at status_since.
    steps = [(event_type, entered[event_type], committed_at if event_type == "committed" else since)
             for event_type in path_to(status)]
    events = []
    for event_type, values, occurred_at in steps:
        try:
            model = DATA_SCHEMAS[event_type].model_validate(_without_none(values), strict=False)
        except ValidationError as exc:
            raise InvalidDeal(error_list(exc)) from None
        events.append(NewEvent(type=event_type, data=model.model_dump(mode="json", exclude_none=True),
                               occurred_at=occurred_at))
    return events


def _without_none(values: dict) -> dict:
    return {k: (_without_none(v) if isinstance(v, dict) else v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Intake:
    """What became of a deal: ``created``, ``exists`` (created before) or ``not_created``."""

    decision: str
    deal: Deal
    stream_id: str
    record: CaseStudy | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": self.decision, "deal_id": self.deal.deal_id,
                                "case_study_commitment": self.deal.case_study_commitment,
                                "id": self.stream_id if self.record else None, "reason": self.reason}
        if self.record is not None:
            body.update(status=self.record.state, status_label=STATUS_LABELS.get(self.record.state),
                        version=self.record.version)
        return body


class DealConflict(Exception):
    """The id derived from a deal already holds a record of another deal."""

    def __init__(self, stream_id: str, deal_id: str, other: str | None):
        super().__init__(f"case study {stream_id!r} exists but belongs to deal {other!r}, not {deal_id!r}")
        self.stream_id = stream_id


def take(store: EventStore, deal: Deal, *, actor: str, now: datetime) -> Intake:
    """Create the record of an accepted deal once; say what was decided for any deal."""
    stream_id = stream_id_for(deal.deal_id)
    if deal.case_study_commitment != "accepted":
        existing = store.record(stream_id)
        reason = ("the customer declined a case study" if deal.case_study_commitment == "declined"
                  else "a case study was not discussed in the deal")
        if existing is not None and existing.deal_id != deal.deal_id:
            raise DealConflict(stream_id, deal.deal_id, existing.deal_id)
        if existing is not None:
            reason += ("; a case study for this deal exists already and is left as it is (post a declined "
                       "event to it if the customer backed out)")
        return Intake("not_created", deal, stream_id, existing, reason)
    # A deal posted again (a nightly re-import) is answered from the record, before anything is sealed:
    # it must not name its people again, least of all one erased since.
    existing, result = store.record(stream_id), None
    if existing is None:
        try:
            result = store.append(stream_id, history(deal, now), actor=actor, expected_version=0)
        except StreamAlreadyExists:
            existing = store.record(stream_id)
    if result is None:
        if existing is None or existing.deal_id != deal.deal_id:
            raise DealConflict(stream_id, deal.deal_id, existing.deal_id if existing else None)
        return Intake("exists", deal, stream_id, existing, "a case study for this deal was created before")
    return Intake("created", deal, stream_id, result.record,
                  "the customer accepted a case study" + (f"; back-filled to {deal.status}"
                                                         if deal.status not in (None, "not_started") else ""))
