"""Where people and other tools find a record: its path in the API, and absolute links built from
PUBLIC_BASE_URL for what leaves the service (Slack messages, webhooks, the weekly report)."""
from __future__ import annotations

from typing import Mapping
from urllib.parse import urlencode

RECORDS_PATH = "/case-studies"
STUCK_LIST_PATH = "/projections/stuck"


def record_path(stream_id: str) -> str:
    """A record's path, relative to where the service is served (ids need no escaping)."""
    return f"{RECORDS_PATH}/{stream_id}"


class Links:
    """Absolute links to this service, as people and other tools reach it."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def record(self, stream_id: str) -> str:
        return self.base + record_path(stream_id)

    def records(self) -> str:
        """Where records live: the ``source`` of the CloudEvents the service sends."""
        return self.base + RECORDS_PATH

    def stuck_list(self) -> str:
        return self.base + STUCK_LIST_PATH

    def to(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """Any path of the API, with a query."""
        return self.base + path + (f"?{urlencode(query)}" if query else "")
