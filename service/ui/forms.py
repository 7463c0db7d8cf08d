"""The dashboard's event forms, built from the event data schemas (events/schemas.py): one field per
schema field, the widget chosen by its type, and the posted form turned back into the event's JSON
data, which the same schema then validates as it does for the API."""
from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from service.events.schemas import DATA_SCHEMAS

TEXTAREA_FROM = 1000  # a text field that may be this long is a text area


@dataclass(frozen=True)
class Field:
    """One control of an event form."""

    name: str  # the form field's name: the data's path, dotted (``account.id``)
    label: str
    widget: str  # text, textarea, date, number, checkbox, select, checkboxes, list, pairs, url, email
    required: bool
    options: tuple[str, ...] = ()
    hint: str | None = None
    low: float | None = None
    high: float | None = None
    fields: tuple["Field", ...] = field(default=())  # a group's (``widget == "group"``)


HINTS = {"list": "separate several with commas", "pairs": "one per line: name = number (e.g. tickets_per_week = 120)"}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize().replace("Csm", "CSM").replace("Nps", "NPS").replace(" url", " URL")


def _unwrap(annotation: Any) -> tuple[Any, list]:
    """The annotation without ``| None``, and the constraints of an optional one's type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if typing.get_origin(annotation) is typing.Annotated:
            return typing.get_args(annotation)[0], list(annotation.__metadata__)
    return annotation, []


def _limit(metadata: list, name: str) -> Any:
    for item in metadata:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def fields_of(model: type[BaseModel], prefix: str = "") -> tuple[Field, ...]:
    """The form's controls for a data schema."""
    out = []
    for name, info in model.model_fields.items():
        annotation, metadata = _unwrap(info.annotation)
        metadata = [*info.metadata, *metadata]
        path, label, required = prefix + name, _label(name), info.is_required()
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append(Field(path, label, "group", required, fields=fields_of(annotation, path + ".")))
        elif origin is Literal:
            out.append(Field(path, label, "select", required, options=typing.get_args(annotation)))
        elif origin is list and typing.get_origin(typing.get_args(annotation)[0]) is Literal:
            out.append(Field(path, label, "checkboxes", required,
                             options=typing.get_args(typing.get_args(annotation)[0])))
        elif origin is list:
            out.append(Field(path, label, "list", required, hint=HINTS["list"]))
        elif origin is dict:
            out.append(Field(path, label, "pairs", required, hint=HINTS["pairs"]))
        elif annotation is bool:
            out.append(Field(path, label, "checkbox", False))
        elif annotation is date:
            out.append(Field(path, label, "date", required))
        elif annotation in (int, float):
            out.append(Field(path, label, "number", required, low=_limit(metadata, "ge"), high=_limit(metadata, "le")))
        else:
            pattern = _limit(metadata, "pattern") or ""
            widget = ("url" if pattern.startswith("^https?://") else "email" if "@" in pattern
                      else "textarea" if (_limit(metadata, "max_length") or 0) >= TEXTAREA_FROM else "text")
            out.append(Field(path, label, widget, required))
    return tuple(out)


FORMS: dict[str, tuple[Field, ...]] = {event_type: fields_of(model) for event_type, model in DATA_SCHEMAS.items()}


class FormError(ValueError):
    """A form field that cannot be read as its schema's type; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


_PAIR = re.compile(r"^\s*(.+?)\s*[=:]\s*(\S+)\s*$")


def data_from(form: Any, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The event data a posted form holds, as JSON values; empty optional fields are left out, so
    the schema's own rules decide what is missing."""
    data: dict[str, Any] = {}
    for control in fields:
        key = control.name.rsplit(".", 1)[-1]
        if control.widget == "group":
            data[key] = data_from(form, control.fields)
            continue
        if control.widget == "checkboxes":
            chosen = [value for value in form.getlist(control.name) if value]
            if chosen:
                data[key] = chosen
            continue
        if control.widget == "checkbox":
            data[key] = form.get(control.name) in ("on", "true", "1")
            continue
        raw = (form.get(control.name) or "").strip()
        if not raw:
            continue
        data[key] = _value(control, raw)
    return data


def _value(control: Field, raw: str) -> Any:
    if control.widget == "number":
        try:
            number = float(raw)
        except ValueError:
            raise FormError(control.name, "must be a number") from None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if control.widget == "list":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if control.widget == "pairs":
        pairs = {}
        for line in raw.splitlines():
            if not line.strip():
                continue
            match = _PAIR.match(line)
            if not match:
                raise FormError(control.name, f"write each as name = number, not {line.strip()!r}")
            try:
                pairs[match.group(1)] = float(match.group(2))
            except ValueError:
                raise FormError(control.name, f"{match.group(2)!r} is not a number") from None
        return pairs
    return raw
