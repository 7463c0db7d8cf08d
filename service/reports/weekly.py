"""The weekly review (DOMAIN.md): how many are in progress, which are stuck, what blocks publication.

The report covers the week that ends at ``as_of`` (default now) in business time: counts by
status then and a week before, stuck records with reasons grouped by CSM, what blocks
publication, new candidates, what was published, and cycle times. It is assembled from the
projections (and the stuck list), and says how far each had read. The Markdown and HTML forms
are the templates beside this file.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader

from service.domain import STATUS_LABELS
from service.domain.reporting import quarter_of
from service.projections.queries import Answer, Projections
from service.projections.stuck import StuckList, StuckRow

WEEK = timedelta(days=7)


def weekly_report(projections: Projections, stuck_list: StuckList, *, as_of: datetime,
                  now: datetime) -> dict[str, Any]:
    """Everything the weekly review asks, for the week ending at ``as_of``."""
    start = as_of - WEEK
    counts_now = projections.counts_at(as_of)
    counts_before = projections.counts_at(start)
    blockers = projections.blockers(as_of=None if as_of >= now else as_of)
    new_candidates = projections.candidates(since=start)
    published = projections.published_between(start, as_of)
    cycle = projections.cycle_times(end=as_of)
    return {
        "as_of": as_of.isoformat(),
        "week_from": start.isoformat(),
        **_counts(counts_now, counts_before),
        "stuck": _stuck(stuck_list.find(as_of=as_of, now=now)),
        "blocking_publication": _blocking(blockers),
        "new_candidates": [{"id": r["id"], "csm": r["csm"], "account_name": r["account_name"],
                            "kpi_improvement_pct": r["kpi_improvement_pct"], "best_metric": r["best_metric"],
                            "nps": r["nps"], "candidate_since": r["candidate_since"].isoformat()}
                           for r in new_candidates.value if r["candidate_since"] <= as_of],
        "published": [{"id": r["id"], "csm": r["csm"], "published_at": r["to_at"].isoformat(),
                       "days_from_commitment": r["days"]} for r in published.value],
        "cycle_times": _cycle_times(cycle, quarter_of(as_of)),
        "read_to": {answer.projector: answer.read_to.to_dict()
                    for answer in (counts_now, blockers, new_candidates, cycle)},
    }


def _counts(now: Answer, before: Answer) -> dict[str, Any]:
    """Counts by status at the end of the week and a week before, with the change."""
    by_now, by_before = now.value["by_status"], before.value["by_status"]
    return {"counts": {status: {"label": label, "now": by_now[status], "week_before": by_before[status],
                                "change": by_now[status] - by_before[status]}
                       for status, label in STATUS_LABELS.items()},
            "total": {"now": now.value["total"], "week_before": before.value["total"]}}


def _stuck(rows: list[StuckRow]) -> dict[str, Any]:
    """Stuck findings grouped by CSM."""
    by_csm: dict[str, list[dict]] = {}
    for row in rows:
        by_csm.setdefault(row.record.csm or "", []).append({
            "id": row.record.id, "account_name": (row.record.account or {}).get("name"),
            "status": row.record.state, "code": row.finding.code, "reason": row.finding.reason,
            "days": row.finding.days})
    return {"count": len(rows), "by_csm": dict(sorted(by_csm.items()))}


def _blocking(blockers: Answer) -> dict[str, Any]:
    """What blocks publication, per record and counted per code."""
    by_record: dict[str, dict[str, Any]] = {}
    by_code: dict[str, int] = {}
    for row in blockers.value:
        entry = by_record.setdefault(row["id"], {"id": row["id"], "csm": row["csm"],
                                                 "account_name": row["account_name"], "status": row["status"],
                                                 "blockers": []})
        entry["blockers"].append({"code": row["code"], "reason": row["reason"], "since": row["since"].isoformat()})
        by_code[row["code"]] = by_code.get(row["code"], 0) + 1
    return {"records": len(by_record), "by_code": dict(sorted(by_code.items())),
            "items": sorted(by_record.values(), key=lambda e: (e["csm"] or "", e["id"]))}


def _cycle_times(cycle: Answer, quarter: str) -> dict[str, Any]:
    """Cycle times of the quarter the week ends in, and of all time."""
    this_quarter = next((q for q in cycle.value["quarters"] if q["quarter"] == quarter), None)
    return {"quarter": quarter,
            "this_quarter": this_quarter["stages"] if this_quarter else None,
            "this_quarter_approver_roles": this_quarter["approver_roles"] if this_quarter else None,
            "all_time": cycle.value["overall"]["stages"],
            "all_time_approver_roles": cycle.value["overall"]["approver_roles"]}


def _md(value: Any) -> str:
    """Text as one Markdown table cell or list item shows it: no line breaks, pipes escaped."""
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _days(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


_MARKDOWN = Environment(loader=PackageLoader("service.reports"), autoescape=False, trim_blocks=True,
                        lstrip_blocks=True, keep_trailing_newline=True)
_MARKDOWN.filters.update(md=_md, days=_days)
_HTML = Environment(loader=PackageLoader("service.reports"), autoescape=True)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for a wiki page or a chat message."""
    return _MARKDOWN.get_template("weekly.md.j2").render(r=report)


def to_html(report: dict[str, Any]) -> str:
    """The report as a standalone HTML page (every value escaped)."""
    return _HTML.get_template("weekly.html.j2").render(r=report)
