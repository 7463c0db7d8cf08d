"""Request schemas: each event type's data is validated here before the state machine sees it.

One discriminated union on ``type`` parses and validates a request body straight from JSON.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from service.domain import APPROVER_ROLES, EVENT_TYPES, SYSTEM_EVENT_TYPES
from service.domain.machine import table

STREAM_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_STREAM_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# No control characters in names; texts may hold line breaks and tabs.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                        pattern=r"^[^\x00-\x1f\x7f]*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000,
                                        pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
Url = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2048, pattern=r"^https?://[!-~]+$")]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254,
                                         pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")]
Ident = Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9._:/-]{1,128}$")]
Role = Literal[APPROVER_ROLES]  # type: ignore[valid-type]
# Bounded so that every value survives both databases' JSON exactly (integers below 2**53).


def _whole(value: Any) -> Any:
    """JSON Schema's integer, which the schemas promise: 9.0 is the integer 9 (a number without a
    fraction), stored as 9."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 else value


Whole = Annotated[int, BeforeValidator(_whole)]
METRIC_LIMIT = 1e15
Number = Annotated[float, Field(allow_inf_nan=False, ge=-METRIC_LIMIT, le=METRIC_LIMIT)]



@dataclass(frozen=True)
class Personal:
    """Marks a field that holds a person's data, and whose: the role of that person in the event.

    ``identifies`` says how the person is asked for: by ``email``, else by ``name`` within the
    record's account. The marked fields are stored encrypted under their person's key."""

    whose: Literal["champion", "approver", "speaker", "respondent"]
    identifies: Literal["email", "name"] | None = None


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Account(_Data):
    id: Name
    name: Name


class Champion(_Data):
    name: Annotated[Name, Personal("champion", identifies="name")]
    title: Annotated[Name, Personal("champion")]
    email: Annotated[Email | None, Personal("champion", identifies="email")] = None


class CommittedData(_Data):
    account: Account
    csm: Name
    champion: Champion
    use_case: Text
    close_date: date
    deal_id: Name | None = None
    anonymized: bool = False
    industry_description: Name | None = None
    msa_restricted: bool = False

    @model_validator(mode="after")
    def _anonymized_needs_description(self) -> "CommittedData":
        if self.anonymized and not self.industry_description:
            raise ValueError("industry_description is required when anonymized is true "
                             "(e.g. \"a major airline\")")
        return self


class NoData(_Data):
    pass


class ApprovalRequestedData(_Data):
    approvers: Annotated[list[Role], Field(min_length=1, max_length=len(APPROVER_ROLES))]
    draft_url: Url | None = None

    @field_validator("approvers")
    @classmethod
    def _unique(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("approvers must not repeat a role")
        return roles


class ApprovalGrantedData(_Data):
    role: Role
    approver: Annotated[Name, Personal("approver", identifies="name")]
    comment: Text | None = None


class ChangesRequestedData(_Data):
    role: Role
    comment: Text
    approver: Annotated[Name | None, Personal("approver", identifies="name")] = None


class PublishedData(_Data):
    url: Url


class HeldData(_Data):
    reason: Text
    revisit_on: date | None = None


class DeclinedData(_Data):
    reason: Text


class ReassignedData(_Data):
    csm: Name


class MetricsRecordedData(_Data):
    kind: Literal["baseline", "current"]
    metrics: Annotated[dict[Name, Number], Field(min_length=1, max_length=50)]
    lower_is_better: Annotated[list[Name], Field(max_length=50)] = []


class QuoteAddedData(_Data):
    text: Annotated[Text, Personal("speaker")]  # what a person said is theirs
    speaker: Annotated[Name, Personal("speaker", identifies="name")]


class NpsRecordedData(_Data):
    score: Annotated[Whole, Field(ge=0, le=10)]
    respondent: Annotated[Name | None, Personal("respondent", identifies="name")] = None


class SharedWithChampionData(_Data):
    formats: Annotated[list[Name], Field(min_length=1, max_length=20)]


class ViewsReportedData(_Data):
    views: Annotated[Whole, Field(ge=0, le=2**53 - 1)]  # every stored number has an exact JSON form


DATA_SCHEMAS: dict[str, type[_Data]] = {
    "committed": CommittedData,
    "started": NoData,
    "approval_requested": ApprovalRequestedData,
    "approval_granted": ApprovalGrantedData,
    "changes_requested": ChangesRequestedData,
    "published": PublishedData,
    "held": HeldData,
    "resumed": NoData,
    "declined": DeclinedData,
    "reassigned": ReassignedData,
    "metrics_recorded": MetricsRecordedData,
    "quote_added": QuoteAddedData,
    "nps_recorded": NpsRecordedData,
    "shared_with_champion": SharedWithChampionData,
    "views_reported": ViewsReportedData,
}
assert set(DATA_SCHEMAS) == set(EVENT_TYPES)


class PersonalDataErasedData(_Data):
    """Appended by an erasure, never by a client: whose data became unreadable, and where. It holds
    no personal data itself."""

    subject: str  # the data subject's id (random, not derived from the person)
    erasure: str  # the erasure receipt's id
    erased_on: date
    fields: list[str]  # "<version>:<path>" of each field of this stream that held the person's data


SYSTEM_SCHEMAS: dict[str, type[_Data]] = {"personal_data_erased": PersonalDataErasedData}
assert set(SYSTEM_SCHEMAS) == set(SYSTEM_EVENT_TYPES)


@dataclass(frozen=True)
class PersonalField:
    """A field of an event type's data that holds a person's data: its path in ``data``."""

    path: tuple[str, ...]
    whose: str
    identifies: str | None

    @property
    def name(self) -> str:
        return ".".join(self.path)


def _personal_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[PersonalField]:
    found = []
    for name, info in model.model_fields.items():
        marks = [mark for mark in info.metadata if isinstance(mark, Personal)]
        if marks:
            found.append(PersonalField((*prefix, name), marks[0].whose, marks[0].identifies))
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found += _personal_fields(info.annotation, (*prefix, name))
    return found


# The one list of personal fields, read from the schemas' marks: every other part reads it here.
PERSONAL_FIELDS: dict[str, tuple[PersonalField, ...]] = {
    event_type: tuple(fields) for event_type, model in DATA_SCHEMAS.items()
    if (fields := _personal_fields(model))
}


class _Envelope(BaseModel):
    """Fields every event request may carry besides its type and data."""

    model_config = ConfigDict(extra="forbid", strict=True)
    expected_version: Annotated[Whole, Field(ge=0)] | None = None
    event_id: uuid.UUID | None = None
    occurred_at: AwareDatetime | None = None
    correlation_id: Ident | None = None
    causation_id: Ident | None = None
    on_behalf_of: Name | None = None  # the person a tool acts for; the actor stays the key's name

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("occurred_at is out of range") from None

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id_from_text(cls, value: Any) -> Any:
        # strict mode takes a UUID only as an object; from JSON it arrives as text
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                raise ValueError("event_id must be a UUID") from None
        return value


def data_fields(model: type[BaseModel]) -> str:
    """An event data schema's fields in short: required ones plain, optional ones in *italics*,
    nested objects with their fields in braces (``account {id, name}``)."""
    parts = []
    for name, info in model.model_fields.items():
        nested = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) \
            else None
        text = f"`{name}`" + (f" {{{data_fields(nested).replace('`', '')}}}" if nested else "")
        parts.append(text if info.is_required() else f"*{text}*")
    return ", ".join(parts)


def transitions_of(event_type: str) -> str:
    """Where an event may happen and where it leads, from the machine's table, in words."""
    moves = []
    for row in table():
        if row["event"] == event_type:
            leads = f" → {row['to']}" if row["to"] else " (the status stays)"
            guards = "; ".join(guard["rule"] for guard in row["guards"])
            moves.append(f"{', '.join(row['from'])}{leads}" + (f", when {guards}" if guards else ""))
    return "; ".join(moves)


def _request_model(event_type: str, data_model: type[_Data]) -> type[_Envelope]:
    no_data = data_model is NoData
    return type(
        "".join(part.title() for part in event_type.split("_")) + "Request",
        (_Envelope,),
        {
            "__annotations__": {"type": Literal[event_type], "data": data_model},
            "data": Field(default_factory=NoData) if no_data else Field(),
            "__module__": __name__,
            "__doc__": f"`{event_type}`: allowed in {transitions_of(event_type)}.",
        },
    )


REQUEST_MODELS: dict[str, type[_Envelope]] = {
    event_type: _request_model(event_type, model) for event_type, model in DATA_SCHEMAS.items()
}

EventRequest = Annotated[Union[tuple(REQUEST_MODELS.values())], Field(discriminator="type")]
_EVENT_REQUEST = TypeAdapter(EventRequest)
MAX_BATCH = 100  # events in one atomic append
EventBatch = Annotated[list[EventRequest], Field(min_length=1, max_length=MAX_BATCH)]
_EVENT_BATCH = TypeAdapter(EventBatch)
# What POST /case-studies/{id}/events takes: one event, or a batch (the two adapters above parse them).
EVENT_BODY = TypeAdapter(Union[EventRequest, EventBatch])


class InvalidEvent(Exception):
    """A request body that is not a valid event; ``errors`` names each field at fault."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        first = errors[0]
        super().__init__(f"{first['field']}: {first['message']}" if first["field"] else first["message"])


class NotJson(Exception):
    """A body that does not parse as JSON."""


_PATTERN_MESSAGES = {
    Name.__metadata__[0].pattern: "must not contain control characters",
    Text.__metadata__[0].pattern: "must not contain control characters other than line breaks and tabs",
    Url.__metadata__[0].pattern: "must be an http:// or https:// URL without spaces",
    Email.__metadata__[0].pattern: "must be an email address",
    Ident.__metadata__[0].pattern: "must be 1-128 characters of A-Z a-z 0-9 . _ : / -",
}


def _field(loc: tuple) -> str:
    # Leave out the union's tag (e.g. "approval_requested"), which follows a batch's index or
    # starts the location of a single event.
    return ".".join(str(part) for i, part in enumerate(loc)
                    if not (part in REQUEST_MODELS and (i == 0 or isinstance(loc[i - 1], int))))


def error_list(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        kind = error["type"]
        if kind == "json_invalid":
            raise NotJson(error["msg"])
        field = _field(error["loc"])
        message = error["msg"]
        if kind == "union_tag_invalid":
            message = f"unknown event type; known types: {', '.join(EVENT_TYPES)}"
            field = _join(field, "type")
        elif kind == "union_tag_not_found":
            message, field = "an event needs a type", _join(field, "type")
        elif kind.startswith("value_error"):
            message = message.removeprefix("Value error, ")
        elif kind == "string_pattern_mismatch":
            message = _PATTERN_MESSAGES.get(error.get("ctx", {}).get("pattern"), message)
        out.append({"field": field, "message": message})
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_event_request(body: bytes) -> _Envelope:
    """Validate a request body as one event; raises NotJson or InvalidEvent."""
    try:
        return _EVENT_REQUEST.validate_json(body)
    except ValidationError as exc:
        raise InvalidEvent(error_list(exc)) from None


def parse_event_batch(body: bytes) -> list[_Envelope]:
    """Validate a request body as a JSON array of 1 to MAX_BATCH events; raises NotJson or InvalidEvent.

    Errors name each event by its index, e.g. ``2.data.approvers``."""
    try:
        return _EVENT_BATCH.validate_json(body)
    except ValidationError as exc:
        raise InvalidEvent(error_list(exc)) from None


def is_batch(body: bytes) -> bool:
    """True when the body is a JSON array (a batch of events) rather than one event."""
    return body.lstrip(b" \t\r\n")[:1] == b"["


def is_valid_stream_id(stream_id: str) -> bool:
    """1-128 characters of ``[A-Za-z0-9._:-]``, but not ``.`` or ``..`` (paths would swallow them)."""
    return bool(_STREAM_ID.fullmatch(stream_id)) and stream_id not in (".", "..")
