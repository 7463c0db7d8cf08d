"""The weekly review (DOMAIN.md): how many are in progress, which are stuck, what blocks publication.

The report covers the week that ends at ``as_of`` (default now): the pipeline then and a week
before (business time), what is stuck and what blocks publication counted by rule and by CSM,
what became a candidate and what was published that week, and cycle times. It is a summary at
any size: the long lists are linked (the stuck list, the blockers), and the short ones are cut
at LISTED with their count. Every section is read from one view of the projections, as known at
``as_of``, and the report names the feed position it reflects. The Markdown and HTML forms are
the templates beside this file.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader

from service.domain import STATUS_LABELS
from service.domain.reporting import quarter_of
from service.links import Links
from service.projections.queries import Answer, View

WEEK = timedelta(days=7)
LISTED = 50  # candidates and publications a report names; the rest are counted


def weekly_report(view: View, links: Links, *, as_of: datetime) -> dict[str, Any]:
    """Everything the weekly review asks, for the week ending at ``as_of``, from one view."""
    start = as_of - WEEK
    when = {"as_of": as_of.isoformat()}
    candidates = view.candidates(since=start, limit=LISTED)
    published = view.published_between(start, as_of, limit=LISTED)
    return {
        "as_of": as_of.isoformat(),
        "week_from": start.isoformat(),
        **_counts(view.counts_at(as_of), view.counts_at(start)),
        "stuck": {**view.stuck_counts().value, "list": links.to("/projections/stuck", when)},
        "blocking_publication": {**view.blocked_counts().value, "list": links.to("/projections/blockers", when)},
        "new_candidates": {
            "count": view.candidate_count(since=start),
            "items": [{"id": r["id"], "csm": r["csm"], "account_name": r["account_name"],
                       "kpi_improvement_pct": r["kpi_improvement_pct"], "best_metric": r["best_metric"],
                       "nps": r["nps"], "candidate_since": r["candidate_since"].isoformat()}
                      for r in candidates.value],
            "list": links.to("/projections/candidates", {"since": start.isoformat()})},
        "published": {
            "count": view.published_count(start, as_of),
            "items": [{"id": r["id"], "csm": r["csm"], "published_at": r["to_at"].isoformat(),
                       "days_from_commitment": r["days"]} for r in published.value]},
        "cycle_times": _cycle_times(view.cycle_times(end=as_of, quarter=quarter_of(as_of)), quarter_of(as_of)),
        "projection": view.answer(None).projection(),
    }


def _counts(now: Answer, before: Answer) -> dict[str, Any]:
    """Counts by status at the end of the week and a week before, with the change."""
    by_now, by_before = now.value["by_status"], before.value["by_status"]
    return {"counts": {status: {"label": label, "now": by_now[status], "week_before": by_before[status],
                                "change": by_now[status] - by_before[status]}
                       for status, label in STATUS_LABELS.items()},
            "total": {"now": now.value["total"], "week_before": before.value["total"]}}


def _cycle_times(cycle: Answer, quarter: str) -> dict[str, Any]:
    """Cycle times of the quarter the week ends in, and of all time."""
    this_quarter = next((q for q in cycle.value["quarters"] if q["quarter"] == quarter), None)
    return {"quarter": quarter,
            "this_quarter": this_quarter["stages"] if this_quarter else None,
            "this_quarter_approver_roles": this_quarter["approver_roles"] if this_quarter else None,
            "all_time": cycle.value["overall"]["stages"],
            "all_time_approver_roles": cycle.value["overall"]["approver_roles"]}


_MD_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_PUNCTUATION = set("\\`*[]()!#|~")  # not "_": inside a word it emphasises nothing


def _md(value: Any) -> str:
    """Stored text as one Markdown table cell or list item shows it, as text and nothing else: no
    line breaks; HTML's ``& < >`` as entities (as the HTML report escapes them); Markdown's own
    punctuation (links, images, emphasis, code, pipes) escaped with a backslash."""
    text = "" if value is None else " ".join(str(value).splitlines())
    return "".join(_MD_HTML.get(c) or (f"\\{c}" if c in _MD_PUNCTUATION else c) for c in text)


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
