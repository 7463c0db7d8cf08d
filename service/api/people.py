"""Personal data over HTTP: access and erasure requests, and the revealing of sealed fields in
every answer (the one place HTTP answers are revealed)."""
from __future__ import annotations

import html
from typing import Annotated, Iterator

from flask import Blueprint, Flask, Response, g, url_for
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.access.roles import ADMINS, AUDITORS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.openapi import Body, describe
from service.api.problems import Problem
from service.events.schemas import Email, Name, Text
from service.people.erasure import Person, PersonNotFound
from service.people.keys import TOKEN_PREFIX

bp = Blueprint("people", __name__)

_JSON = ("application/json", "application/problem+json")


class ErasureRequest(BaseModel):
    """Who to erase, by email, or by name within an account for a person with no email; and why."""

    model_config = ConfigDict(extra="forbid", strict=True)
    email: Email | None = None
    name: Name | None = None
    account_id: Name | None = None
    reason: Annotated[Text, Field(description="why: the request's reference, e.g. \"Art. 17 request, ticket 4411\"")]

    @model_validator(mode="after")
    def _one_person(self) -> "ErasureRequest":
        Person.asked(self.email, self.name, self.account_id)
        return self


def _people():
    people = services().people
    if people is None:
        raise Problem("personal_data_key_missing", "PERSONAL_DATA_KEY is not set on this server")
    return people


@bp.get("/people")
@describe(responses={200: doc.PersonalData}, errors=("not_found",), tag="people")
@requires(*AUDITORS)
@params.accepts(params.Text("email", "the person's email", max_length=254),
                params.Text("name", "the person's name, for a person with no email (with account_id)"),
                params.Text("account_id", "the account the named person belongs to"))
def access(email, name, account_id):
    """Everything held about a person (GDPR Art. 15), decrypted: each record and field."""
    try:
        person = Person.asked(email, name, account_id)
    except ValueError as error:
        raise Problem("invalid_parameter", str(error), parameter="email") from None
    try:
        return _people().export(person)
    except PersonNotFound:
        raise Problem("not_found", "no personal data is held about this person") from None


@bp.post("/people/erasure")
@describe(responses={201: Body(doc.ErasureReceipt, description="erased"),
                     200: Body(doc.ErasureReceipt, description="erased before: the receipt kept then")},
          body=ErasureRequest, errors=("invalid_request", "not_found"), tag="people",
          links={201: {"receipt": ("people.receipt", {"erasure_id": "$response.body#/id"})}})
@requires(*ADMINS)
def erase():
    """Erase a person (GDPR Art. 17): destroy their key, note the erasure in every record that held
    their data, clean the outbox; answers the receipt, which is kept."""
    asked = params.json_model(ErasureRequest, "the erasure request")
    person = Person.asked(asked.email, asked.name, asked.account_id)
    try:
        receipt, erased = _people().erase(person, reason=asked.reason, actor=g.principal.name)
    except PersonNotFound:
        raise Problem("not_found", "no personal data is held about this person, and none was erased") from None
    return receipt, (201 if erased else 200), {"Location": url_for("people.receipt", erasure_id=receipt["id"])}


@bp.get("/people/erasures/<erasure_id>")
@describe(responses={200: doc.ErasureReceipt}, errors=("not_found",), tag="people")
@requires(*AUDITORS)
def receipt(erasure_id: str):
    """An erasure's receipt."""
    found = _people().receipts(erasure_id=erasure_id[:36])
    if not found:
        raise Problem("not_found", f"no erasure {erasure_id!r}")
    return found[0]


def keep_sealed() -> None:
    """Answer this request with sealed fields as stored (what the chain hashes)."""
    g.keep_sealed = True


def register(app: Flask) -> None:
    """Reveal sealed fields in every answer on its way out: JSON, HTML, CSV (streamed too) and text."""

    @app.after_request
    def _reveal(response: Response) -> Response:
        if response.direct_passthrough or g.get("keep_sealed"):
            return response
        opener = services().opener()
        mimetype = response.mimetype or ""
        if mimetype in _JSON or mimetype.endswith("+json"):
            reveal = lambda text: opener.json(text.encode()).decode()  # noqa: E731
        elif mimetype == "text/csv":
            reveal = opener.csv
        elif mimetype == "text/html":
            reveal = lambda text: opener.text(text, escape=html.escape)  # noqa: E731
        elif mimetype.startswith("text/"):
            reveal = opener.text
        else:
            return response
        if response.is_streamed:  # each chunk holds whole rows (CSV is the one streamed today)
            response.response = _revealed_chunks(response.response, reveal)
        elif TOKEN_PREFIX.encode() in response.get_data():  # most answers name nobody: left as they are
            response.set_data(reveal(response.get_data(as_text=True)))
        return response


def _revealed_chunks(chunks, reveal) -> Iterator[str]:
    try:
        for chunk in chunks:
            yield reveal(chunk.decode() if isinstance(chunk, bytes) else chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
