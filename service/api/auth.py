"""Bearer API keys and the roles of API.md."""
from __future__ import annotations

from functools import wraps
from typing import Callable

import structlog
from flask import g, request

from service.api import services
from service.api.problems import Problem


def _principal():
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem("unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    principal = services().keys.authenticate(key.strip())
    if principal is None:
        raise Problem("unauthorized", "the API key is unknown or has been revoked")
    return principal


def requires(*roles: str) -> Callable:
    """Let a view run only for a key whose role is one of ``roles``."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            principal = _principal()
            g.principal = principal
            structlog.contextvars.bind_contextvars(key=principal.name)
            if principal.role not in roles:
                raise Problem("forbidden",
                              f"role {principal.role} may not do this; it needs one of: {', '.join(roles)}",
                              role=principal.role, allowed_roles=list(roles))
            return view(*args, **kwargs)

        guarded.roles = roles  # for the OpenAPI document
        return guarded

    return decorate
