"""The case study model: statuses, events, guards, the shared state machine and pure replay;
readiness, the stuck rules and the folds reporting asks of a record's history.

The bottom of the house: it imports nothing else of the service, and no Flask or database library.
"""
from service.domain.errors import DomainError, GuardFailed, StreamCorrupt, TransitionNotAllowed
from service.domain.machine import allowed_events, apply, path_to, replay
from service.domain.model import (
    APPROVER_ROLES,
    EVENT_TYPES,
    STATUS_LABELS,
    SYSTEM_EVENT_TYPES,
    CaseStudy,
    Event,
    Status,
)
from service.domain.readiness import CANDIDACY_EVENTS, Readiness, readiness
from service.domain.stuck import STUCK_CODES, StuckFinding, StuckThresholds, stuck_findings

__all__ = [
    "APPROVER_ROLES",
    "CANDIDACY_EVENTS",
    "EVENT_TYPES",
    "STATUS_LABELS",
    "STUCK_CODES",
    "SYSTEM_EVENT_TYPES",
    "CaseStudy",
    "DomainError",
    "Event",
    "GuardFailed",
    "Readiness",
    "Status",
    "StreamCorrupt",
    "StuckFinding",
    "StuckThresholds",
    "TransitionNotAllowed",
    "allowed_events",
    "apply",
    "path_to",
    "readiness",
    "replay",
    "stuck_findings",
]
