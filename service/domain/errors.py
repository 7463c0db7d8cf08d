"""Refusals the domain gives, each carrying what a client needs to act on it."""
from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal the model gives."""


class Refusal(DomainError):
    """The machine refused an event: the status it was in, what it allows, and why not."""

    def __init__(self, event_type: str, current_status: str, allowed: list[str], reason: str):
        super().__init__(reason)
        self.event_type = event_type
        self.current_status = current_status
        self.allowed_events = allowed
        self.reason = reason


class TransitionNotAllowed(Refusal):
    """The current status has no transition for this event."""


class GuardFailed(Refusal):
    """The status allows the event but a guard refused it."""


class StreamCorrupt(DomainError):
    """A stored stream cannot be replayed: a gap in versions or an event the machine refuses."""
