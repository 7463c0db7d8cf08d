"""The service's contract as OpenAPI 3.1, generated from the code that serves it.

Each view says what it takes and answers with ``@describe``; its roles come from ``@requires``,
its query parameters from ``@params.accepts`` (the same objects that parse them), its path
parameters from its URL rule, and request bodies from the pydantic schemas that validate them.
The document is built from the app's URL map when first asked for; ``/docs`` shows it in
Swagger UI, served from the flask-swagger-ui package (no CDN).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from flask import Blueprint, Flask, current_app, redirect
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic import BaseModel, TypeAdapter

from service.api.problems import PROBLEMS
from service.api.responses import ProblemDetails
from service.events.schemas import STREAM_ID_PATTERN
from service.notifications.outbox import MAX_MESSAGE_ID
from service.notifications.subscriptions import MAX_SUBSCRIPTION_ID

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
UNDOCUMENTED = ("static", "swagger_ui.", "openapi.", "ui.")  # endpoint prefixes the document leaves out (ui: pages)
JSON, PROBLEM_JSON, CSV = "application/json", "application/problem+json", "text/csv"
ALWAYS = ("internal_error", "database_unavailable", "uri_too_long", "headers_too_large")
_RULE_ARGUMENT = re.compile(r"<(?:(\w+):)?(\w+)>")
PATH_SCHEMAS = {"stream_id": {"type": "string", "pattern": STREAM_ID_PATTERN},
                "subscription_id": {"type": "integer", "minimum": 1, "maximum": MAX_SUBSCRIPTION_ID},
                "message_id": {"type": "integer", "minimum": 1, "maximum": MAX_MESSAGE_ID}}


class Body:
    """A response or request body: a pydantic model or type, or a plain JSON Schema, per media type."""

    def __init__(self, schema: Any, media_type: str = JSON, *, description: str = ""):
        self.schema, self.media_type, self.description = schema, media_type, description


def describe(*, responses: dict[int, Any], body: Any = None, body_media_type: str = JSON,
             errors: Iterable[str] = (), headers: Iterable[tuple] = (), csv: bool = False,
             tag: str | None = None, links: dict[int, dict[str, tuple[str, dict[str, str]]]] | None = None) -> Callable:
    """Say what a view answers (status -> model, Body or None for no content), the request body it
    validates, the error codes it may give beyond the usual ones, request headers it reads
    (name, description and optionally a pattern), and OpenAPI links from an answer to the
    operations it leads to (status -> name -> (endpoint, parameters as runtime expressions))."""

    def decorate(view: Callable) -> Callable:
        view.openapi = {"responses": responses, "body": body, "body_media_type": body_media_type,
                        "errors": tuple(errors), "headers": tuple(headers), "csv": csv, "tag": tag,
                        "links": links or {}}
        return view

    return decorate


class _Schemas:
    """components.schemas, filled as the operations name models."""

    def __init__(self):
        self.components: dict[str, Any] = {}

    def of(self, thing: Any, *, mode: str = "serialization", name: str | None = None) -> dict:
        if isinstance(thing, dict):
            return thing
        adapter = thing if isinstance(thing, TypeAdapter) else TypeAdapter(thing)
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        self.components.update(schema.pop("$defs", {}))
        name = name or (thing.__name__ if isinstance(thing, type) and issubclass(thing, BaseModel) else None)
        if name:
            self.components[name] = schema
            return {"$ref": f"#/components/schemas/{name}"}
        return schema


def _problem_response(codes: list[str], schemas: _Schemas) -> dict:
    problem = schemas.of(ProblemDetails)
    description = "; ".join(f"`{code}`: {PROBLEMS[code][1]}" for code in codes)
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {
        "allOf": [problem, {"properties": {"code": {"enum": codes}}}]}}}}


def _operation(rule, view: Callable, schemas: _Schemas) -> dict:
    """One operation: its summary, parameters, request body, answers and errors, from the view."""
    meta = view.openapi
    roles = getattr(view, "roles", None)
    doc = (view.__doc__ or "").strip().replace("``", "`")  # docstrings' literals, as Markdown
    summary, _, rest = doc.partition("\n")
    description = rest.strip()
    if roles:
        description = (description + "\n\n" if description else "") + f"Roles: {', '.join(roles)}."
    operation = {"operationId": rule.endpoint, "summary": summary, "tags": [meta["tag"] or rule.endpoint.split(".")[0]],
                 "parameters": _parameters(rule, view),
                 "responses": {**_answers(meta, schemas), **_problems(_error_codes(view), schemas)},
                 "security": [{"bearer": []}] if roles else []}
    if description:
        operation["description"] = description
    if roles:
        operation["x-roles"] = list(roles)
    if meta["body"] is not None:
        operation["requestBody"] = {"required": True, "content": {meta["body_media_type"]: {
            "schema": schemas.of(meta["body"], mode="validation")}}}
    return operation


def _parameters(rule, view: Callable) -> list[dict]:
    """Path parameters from the URL rule, query parameters as the view declares them, request headers."""
    parameters = []
    for converter, name in _RULE_ARGUMENT.findall(rule.rule):
        schema = PATH_SCHEMAS.get(name, {"type": "integer"} if converter == "int" else {"type": "string"})
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    parameters += [query.openapi() for query in getattr(view, "query_params", ())]
    parameters += [{"name": name, "in": "header", "required": False, "description": text,
                    "schema": {"type": "string", **({"pattern": pattern[0]} if pattern else {})}}
                   for name, text, *pattern in view.openapi["headers"]]
    return parameters


def _error_codes(view: Callable) -> list[str]:
    """The problem codes a view may answer: its own, and those its roles, parameters and body bring."""
    meta = view.openapi
    codes = list(meta["errors"])
    if getattr(view, "roles", None):
        codes += ["unauthorized", "forbidden"]
    if getattr(view, "query_params", ()):
        codes.append("invalid_parameter")
    if getattr(view, "costly", False):
        codes.append("too_many_requests")
    if meta["body"] is not None:
        codes += ["payload_too_large", "unsupported_media_type", "malformed_json"]
    return list(dict.fromkeys(codes + list(ALWAYS)))


def _answers(meta: dict, schemas: _Schemas) -> dict[str, Any]:
    """The successful answers, by status, with each media type's schema."""
    responses: dict[str, Any] = {}
    for status, answer in meta["responses"].items():
        if answer is None:
            responses[str(status)] = {"description": "no content"}
            continue
        answers = [a if isinstance(a, Body) else Body(a) for a in (answer if isinstance(answer, list) else [answer])]
        content = {a.media_type: {"schema": schemas.of(a.schema)} for a in answers}
        if meta["csv"] and status == 200:
            content[CSV] = {"schema": {"type": "string"}}
        responses[str(status)] = {"description": answers[0].description or _status_text(status), "content": content}
        if meta["links"].get(status):
            responses[str(status)]["links"] = {
                name: {"operationId": endpoint, "parameters": parameters}
                for name, (endpoint, parameters) in meta["links"][status].items()}
    return responses


def _problems(codes: list[str], schemas: _Schemas) -> dict[str, Any]:
    """The problem answers, one per HTTP status, naming the codes each may carry."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(PROBLEMS[code][0], []).append(code)
    return {str(status): _problem_response(grouped, schemas) for status, grouped in sorted(by_status.items())}


def _status_text(status: int) -> str:
    return {200: "OK", 201: "Created", 304: "Not modified"}.get(status, str(status))


def undocumented_views(app: Flask) -> list[str]:
    """Endpoints served but missing from the document (a test keeps this empty)."""
    return sorted(rule.endpoint for rule in app.url_map.iter_rules()
                  if not rule.endpoint.startswith(UNDOCUMENTED)
                  and not hasattr(app.view_functions[rule.endpoint], "openapi"))


def build(app: Flask) -> dict:
    """The OpenAPI 3.1 document of ``app``."""
    schemas = _Schemas()
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        if rule.endpoint.startswith(UNDOCUMENTED) or not hasattr(view, "openapi"):
            continue
        path = _RULE_ARGUMENT.sub(lambda m: "{" + m.group(2) + "}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, view, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "casestudies", "version": "1",
                 "description": "The system of record for customer-success case studies: each case study is an "
                                "event stream, its state what replaying it gives. Errors are RFC 9457 problem "
                                "details with a stable `code`; every answer carries `X-Request-Id`."},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.components.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API key made by `casestudies keys "
                                                                     "create`; its role decides what it may do."}}},
    }


@bp.get("/openapi.json")
def openapi_json():
    """This document."""
    document = current_app.extensions.get("casestudies_openapi")
    if document is None:
        document = current_app.extensions["casestudies_openapi"] = build(current_app)
    return document


@bp.get("/docs")
def docs_redirect():
    """To Swagger UI, by a relative address: never one built from the request's Host header."""
    return redirect("/docs/", code=308)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "casestudies"}))
