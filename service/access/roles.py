"""The roles a key can have, and which of them may do what (API.md's table of roles)."""
from __future__ import annotations

ROLES: tuple[str, ...] = ("writer", "reader", "auditor", "admin")

WRITERS = ("writer", "admin")  # append events, post deals
RECORD_READERS = ("writer", "reader", "auditor", "admin")  # read records
PROJECTION_READERS = ("reader", "auditor", "admin")  # reports, projections and the feed
AUDITORS = ("auditor", "admin")  # whole streams, approval history, chain checks
ADMINS = ("admin",)  # webhooks and the outbox
