"""The test oracle for the projections: every reporting question answered by a full replay of the
events recorded by then, one stream at a time, through the domain's rules alone.

It shares nothing with the projectors but those rules (what blocks publication, readiness, the
stuck rules, the stages and approval rounds, percentiles); the folding over a record's history,
the versions by recorded time and the SQL are what it checks.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable

from service.domain import STATUS_LABELS, StuckThresholds, readiness
from service.domain.approvals import approval_rounds
from service.domain.machine import replay_steps
from service.domain.model import CaseStudy
from service.domain.reporting import STAGES, blockers, days_between, quarter_of, summarise
from service.domain.stuck import StuckFacts, stuck_findings, stuck_starts
from service.events.event import StoredEvent

WEEK = timedelta(days=7)


@dataclass
class History:
    """One record as a full replay of its known events leaves it, with what reports ask of its past."""

    record: CaseStudy
    intervals: list[tuple[str, str | None, datetime, datetime | None]] = field(default_factory=list)
    open_blockers: dict[tuple[str, str], tuple[Any, datetime]] = field(default_factory=dict)
    candidate_since: datetime | None = None
    stages: dict[str, tuple[datetime, datetime, float]] = field(default_factory=dict)
    approver_times: list[tuple[str, datetime, float]] = field(default_factory=list)  # (role, decided_at, days)


def replay_known(streams: dict[str, list[StoredEvent]], known_at: datetime | None,
                 kpi_threshold_pct: float = 20.0) -> dict[str, History]:
    """Each record as known at ``known_at`` (None: every event), by a full replay of its events."""
    out = {}
    for stream_id, stream in streams.items():
        events = [e for e in stream if known_at is None or e.recorded_at <= known_at]
        if events:
            out[stream_id] = _history(stream_id, events, kpi_threshold_pct)
    return out


def _history(stream_id: str, events: list[StoredEvent], kpi_threshold_pct: float) -> History:
    first: dict[str, datetime] = {}
    intervals: list[list] = []
    opened: dict[tuple[str, str], tuple[Any, datetime]] = {}
    since = None
    record = None
    for event, record in replay_steps(stream_id, events):
        first.setdefault(event.type, event.occurred_at)
        if not intervals or intervals[-1][:2] != [record.state, record.csm]:
            if intervals:
                intervals[-1][3] = event.occurred_at
            intervals.append([record.state, record.csm, event.occurred_at, None])
        now = {b.key: b for b in blockers(record)}
        opened = {key: (b, opened[key][1] if key in opened and opened[key][0] == b else event.occurred_at)
                  for key, b in now.items()}
        candidate = readiness(record, kpi_threshold_pct).candidate
        since = (since or event.occurred_at) if candidate else None
    committed = first["committed"]
    return History(
        record=copy.deepcopy(record),
        intervals=[tuple(i) for i in intervals],
        open_blockers=opened,
        candidate_since=since,
        stages={stage: (committed, first[kind], days_between(committed, first[kind]))
                for stage, kind in STAGES.items() if kind in first},
        approver_times=[(d.role, d.step.occurred_at, round(d.took_seconds / 86_400, 4))
                        for r in approval_rounds(events) for d in r.decisions])


def _zeros() -> dict[str, int]:
    return {status: 0 for status in STATUS_LABELS}


def counts(pairs: Iterable[tuple[str | None, str]]) -> dict[str, Any]:
    """(csm, status) pairs as the pipeline answer counts them."""
    by_status, by_csm = _zeros(), {}
    for csm, status in pairs:
        by_status[status] += 1
        by_csm.setdefault(csm or "", _zeros())[status] += 1
    return {"total": sum(by_status.values()), "by_status": by_status, "by_csm": dict(sorted(by_csm.items()))}


def pipeline(histories: dict[str, History]) -> dict[str, Any]:
    return counts((h.record.csm, h.record.state) for h in histories.values())


def counts_at(histories: dict[str, History], moment: datetime) -> dict[str, Any]:
    return counts((csm, status) for h in histories.values() for status, csm, start, end in h.intervals
                  if start <= moment and (end is None or end > moment))


def stuck(histories: dict[str, History], reference: datetime, limits: StuckThresholds) -> list[dict]:
    """Every finding at ``reference``, in the stuck list's order (CSM, when the rule began to hold, record, rule)."""
    found = []
    for h in histories.values():
        starts = stuck_starts(StuckFacts.of(h.record), limits)
        for finding in stuck_findings(h.record, reference, limits):
            account = h.record.account
            found.append(((h.record.csm, starts[finding.code], h.record.id, finding.code), {
                "id": h.record.id, "status": h.record.state, "csm": h.record.csm,
                "account": {"id": account["id"], "name": account["name"]} if account else None,
                "code": finding.code, "reason": finding.reason, "since": finding.since.isoformat(),
                "days": finding.days, "details": finding.details}))
    return [item for _, item in sorted(found, key=lambda pair: pair[0])]


def open_blockers(histories: dict[str, History], reference: datetime) -> list[dict]:
    """Every open blocker, with the days it has blocked up to ``reference``, in (CSM, since, id, code) order."""
    items = []
    for h in histories.values():
        for (code, subject), (blocker, since) in h.open_blockers.items():
            items.append({"id": h.record.id, "status": h.record.state, "csm": h.record.csm,
                          "account_name": h.record.account["name"] if h.record.account else None, "code": code,
                          "subject": subject or None, "reason": blocker.reason, "since": since.isoformat(),
                          "days": max(0, (reference - since).days), "details": blocker.details})
    return sorted(items, key=lambda i: (i["csm"] or "", i["since"], i["id"], i["code"], i["subject"] or ""))


def cycle_times(histories: dict[str, History], *, start: datetime | None = None, end: datetime | None = None,
                csm: str | None = None) -> dict[str, Any]:
    def keep(h: History, at: datetime) -> bool:
        return ((start is None or at >= start) and (end is None or at <= end)
                and (csm is None or h.record.csm == csm))

    groups: dict[str, dict[str, dict[str, list[float]]]] = {"stages": {stage: {} for stage in STAGES},
                                                            "approver_roles": {}}
    for h in histories.values():
        for stage, (_, done, days) in h.stages.items():
            if keep(h, done):
                groups["stages"][stage].setdefault(quarter_of(done), []).append(days)
        for role, decided, days in h.approver_times:
            if keep(h, decided):
                groups["approver_roles"].setdefault(role, {}).setdefault(quarter_of(decided), []).append(days)
    groups["approver_roles"] = dict(sorted(groups["approver_roles"].items()))
    quarters = sorted({q for group in groups.values() for days in group.values() for q in days})
    return {
        "quarters": [{"quarter": q, **{name: {key: summarise(days.get(q, [])) for key, days in group.items()}
                                       for name, group in groups.items()}} for q in quarters],
        "overall": {name: {key: summarise(d for per_quarter in days.values() for d in per_quarter)
                           for key, days in group.items()} for name, group in groups.items()},
    }


def candidates(histories: dict[str, History], *, since: datetime | None = None) -> list[dict]:
    items = []
    for h in histories.values():
        ready = readiness(h.record, 20.0)
        if ready.candidate and (since is None or h.candidate_since >= since):
            items.append({"id": h.record.id, "status": h.record.state, "csm": h.record.csm,
                          "account_name": h.record.account["name"] if h.record.account else None,
                          "kpi_improvement_pct": ready.kpi_improvement_pct, "best_metric": ready.best_metric,
                          "nps": ready.nps, "candidate_since": h.candidate_since.isoformat()})
    return sorted(items, key=lambda i: (-datetime.fromisoformat(i["candidate_since"]).timestamp(), i["id"]))


def published_between(histories: dict[str, History], start: datetime, end: datetime) -> list[dict]:
    found = [(h.stages["committed_to_published"], h) for h in histories.values()
             if "committed_to_published" in h.stages and start <= h.stages["committed_to_published"][1] < end]
    return [{"id": h.record.id, "csm": h.record.csm, "published_at": stage[1].isoformat(),
             "days_from_commitment": stage[2]} for stage, h in sorted(found, key=lambda p: (p[0][1], p[1].record.id))]


def weekly(histories: dict[str, History], as_of: datetime, limits: StuckThresholds) -> dict[str, Any]:
    """The weekly report's figures (the parts a replay can give: all but links and the feed position)."""
    start = as_of - WEEK
    now, before = counts_at(histories, as_of), counts_at(histories, start)
    found = stuck(histories, as_of, limits)
    blocked = open_blockers(histories, as_of)
    new = candidates(histories, since=start)
    published = published_between(histories, start, as_of)
    cycle = cycle_times(histories, end=as_of)
    quarter = next((q for q in cycle["quarters"] if q["quarter"] == quarter_of(as_of)), None)
    return {
        "counts": {status: {"label": label, "now": now["by_status"][status], "week_before": before["by_status"][status],
                            "change": now["by_status"][status] - before["by_status"][status]}
                   for status, label in STATUS_LABELS.items()},
        "total": {"now": now["total"], "week_before": before["total"]},
        "stuck": _summary(found),
        "blocking_publication": _summary(blocked),
        "new_candidates": {"count": len(new), "first": [c["id"] for c in new[:50]]},
        "published": {"count": len(published), "first": [p["id"] for p in published[:50]]},
        "cycle_times": {"quarter": quarter_of(as_of), "this_quarter": quarter["stages"] if quarter else None,
                        "this_quarter_approver_roles": quarter["approver_roles"] if quarter else None,
                        "all_time": cycle["overall"]["stages"],
                        "all_time_approver_roles": cycle["overall"]["approver_roles"]},
    }


def _summary(items: list[dict]) -> dict[str, Any]:
    by_code: dict[str, int] = {}
    by_csm: dict[str, dict[str, int]] = {}
    for item in items:
        by_code[item["code"]] = by_code.get(item["code"], 0) + 1
        entry = by_csm.setdefault(item["csm"] or "", {"count": 0})
        entry["count"] += 1
        entry[item["code"]] = entry.get(item["code"], 0) + 1
    return {"count": len(items), "records": len({i["id"] for i in items}), "by_code": dict(sorted(by_code.items())),
            "by_csm": dict(sorted(by_csm.items()))}
