"""A ceiling on costly reads: each key may have at most ``COSTLY_READS_PER_KEY`` of them running
at once, across every gunicorn worker on the host, so that one reporting job cannot occupy every
worker and keep health checks and other clients waiting. Past it: 429 with Retry-After.

The slots are advisory file locks (``flock``) in the server's run folder (``HELPERS_DIR``, which
``casestudies serve`` sets; the system's temporary folder otherwise): the kernel releases a
slot when its holder finishes or dies, so a killed worker never leaks one.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from functools import wraps
from pathlib import Path
from typing import Callable

from flask import Response, current_app, g

from service.api.problems import Problem
from service.supervision import HELPERS_DIR

RETRY_AFTER = 1  # seconds


def _folder() -> Path:
    folder = Path(os.environ.get(HELPERS_DIR) or tempfile.gettempdir()) / "costly-reads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def slot_tag(database_url: str, key_name: str) -> str:
    """The slots' file name stem for a key of a database (keys are named uniquely per database;
    a hash, so that no name or URL appears in file names)."""
    return hashlib.sha256(f"{database_url}\0{key_name}".encode()).hexdigest()[:24]


def _take(tag: str, slots: int):
    """An open file holding one of the slots named ``tag``, or None when all are taken."""
    for slot in range(slots):
        handle = open(_folder() / f"{tag}.{slot}", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return handle
    return None


def costly(view: Callable) -> Callable:
    """Run ``view`` (behind ``requires``) in one of its key's slots; a streamed answer keeps its slot
    until the last byte is written."""

    @wraps(view)
    def limited(*args, **kwargs):
        settings = current_app.extensions["casestudies"].settings
        slots, principal = settings.costly_reads_per_key, g.get("principal")
        if principal is None or slots == 0:
            return view(*args, **kwargs)
        held = _take(slot_tag(settings.database_url, principal.name), slots)
        if held is None:
            problem = Problem("too_many_requests", f"this key already has {slots} costly read(s) running; "
                              "try again when it has finished", limit=slots)
            problem.headers["Retry-After"] = str(RETRY_AFTER)
            raise problem
        try:
            answer = view(*args, **kwargs)
        except BaseException:
            held.close()
            raise
        if isinstance(answer, Response) and answer.is_streamed:
            answer.call_on_close(held.close)
        else:
            held.close()
        return answer

    limited.costly = True  # for the OpenAPI document
    return limited
