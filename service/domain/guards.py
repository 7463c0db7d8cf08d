"""Guards: small pure functions that say why an event may not happen now, or None when it may.

Each guard is wrapped as a ``transitions`` condition, so the machine decides with it, and the
same function gives the refusal its reason.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from service.domain.model import STATUS_LABELS, CaseStudy

Reason = Callable[[CaseStudy, Mapping[str, Any]], "str | None"]


class Guard:
    """A guard usable as a ``transitions`` condition (the machine sends EventData): its ``rule`` in
    words, and the function that says why an event breaks it. ``__name__`` names it in the
    machine's drawing and in ``GET /machine``."""

    def __init__(self, name: str, rule: str, reason: Reason):
        self.__name__ = name
        self.rule = rule
        self.reason = reason

    def __call__(self, event_data: Any) -> bool:
        return self.reason(event_data.model, event_data.kwargs["data"]) is None


def _role_pending(verb: str) -> Reason:
    def reason(record: CaseStudy, data: Mapping[str, Any]) -> str | None:
        role = data["role"]
        answer = record.approvals.get(role)
        if answer is None:
            requested = ", ".join(record.approvals) or "none"
            return f"cannot {verb}: {role} was not asked to approve (requested: {requested})"
        if answer != "pending":
            return f"cannot {verb}: {role} has already answered ({answer})"
        return None

    return reason


def _all_granted(record: CaseStudy, data: Mapping[str, Any]) -> str | None:
    pending = [role for role, answer in record.approvals.items() if answer != "granted"]
    if pending:
        return "cannot publish: approval pending from " + ", ".join(
            role for role in record.pending_approvers() or pending)
    return None


def _different_csm(record: CaseStudy, data: Mapping[str, Any]) -> str | None:
    if data["csm"] == record.csm:
        return f"cannot reassign: {record.csm} is already the CSM"
    return None


def _held_from(status: str) -> Reason:
    def reason(record: CaseStudy, data: Mapping[str, Any]) -> str | None:
        if record.held_from != status:
            return f"cannot resume to {STATUS_LABELS[status]}: the record was held from {record.held_from}"
        return None

    return reason


_ROLE_PENDING = "the role was asked in this round and has not answered"
APPROVAL_GRANTED = Guard("role_pending", _ROLE_PENDING, _role_pending("grant approval"))
CHANGES_REQUESTED = Guard("role_pending", _ROLE_PENDING, _role_pending("request changes"))
ALL_GRANTED = Guard("all_approvers_granted", "every approver asked in this round has granted", _all_granted)
DIFFERENT_CSM = Guard("csm_differs", "the new CSM is not the current one", _different_csm)


def held_from(status: str) -> Guard:
    """The guard of the ``resumed`` transition back to ``status``."""
    return Guard(f"held_from_{status}", f"the record was held from {STATUS_LABELS[status]}", _held_from(status))
