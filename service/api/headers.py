"""Headers every answer carries: no content sniffing, no caching of what a key was needed for,
and on HTML pages a Content-Security-Policy that runs only this service's own scripts and lets
no other site frame them."""
from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, request

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def content_security_policy(page: bytes) -> str:
    """The policy for an HTML page: scripts from this origin, plus the page's own inline scripts
    by their hashes (Swagger UI's start-up script), nothing else."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in _INLINE_SCRIPT.findall(page))
    return ("default-src 'self'; " + f"script-src 'self'{' ' + hashes if hashes else ''}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def register(app: Flask) -> None:
    @app.after_request
    def _secure(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        if "Authorization" in request.headers and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        if response.mimetype == "text/html":
            page = b"" if response.is_streamed else response.get_data()
            response.headers["Content-Security-Policy"] = content_security_policy(page)
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Referrer-Policy"] = "no-referrer"
        return response
