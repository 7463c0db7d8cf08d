"""The weekly review (DOMAIN.md): how many are in progress, which are stuck, what blocks publication.

The report covers the week that ends at ``as_of`` (default now) in business time: counts by
status then and a week before, stuck records with reasons grouped by CSM, what blocks
publication, new candidates, what was published, and cycle times. It is assembled from the
projections (and the stuck rules over the state table), and says how far each had read.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment

from service.domain import STATUS_LABELS
from service.domain.reporting import STAGES, quarter_of
from service.projections.queries import Projections
from service.projections.stuck import StuckList

WEEK = timedelta(days=7)


def weekly_report(projections: Projections, stuck_list: StuckList, *, as_of: datetime,
                  now: datetime) -> dict[str, Any]:
    """Everything the weekly review asks, for the week ending at ``as_of``."""
    start = as_of - WEEK
    counts_now = projections.counts_at(as_of)
    counts_before = projections.counts_at(start)
    stuck = stuck_list.find(as_of=as_of, now=now)
    blockers = projections.blockers(as_of=None if as_of >= now else as_of)
    new_candidates = projections.candidates(since=start)
    published = projections.published_between(start, as_of)
    cycle = projections.cycle_times(end=as_of)
    quarter = quarter_of(as_of)

    stuck_by_csm: dict[str, list[dict]] = {}
    for row in stuck:
        stuck_by_csm.setdefault(row.record.csm or "", []).append({
            "id": row.record.id, "account_name": (row.record.account or {}).get("name"),
            "status": row.record.state, "code": row.finding.code, "reason": row.finding.reason,
            "days": row.finding.days})
    blocking: dict[str, dict[str, Any]] = {}
    for row in blockers.value:
        entry = blocking.setdefault(row["id"], {"id": row["id"], "csm": row["csm"],
                                                "account_name": row["account_name"], "status": row["status"],
                                                "blockers": []})
        entry["blockers"].append({"code": row["code"], "reason": row["reason"],
                                  "since": row["since"].isoformat()})
    by_code: dict[str, int] = {}
    for row in blockers.value:
        by_code[row["code"]] = by_code.get(row["code"], 0) + 1
    this_quarter = next((q for q in cycle.value["quarters"] if q["quarter"] == quarter), None)
    return {
        "as_of": as_of.isoformat(),
        "week_from": start.isoformat(),
        "counts": {status: {"label": label, "now": counts_now.value["by_status"][status],
                            "week_before": counts_before.value["by_status"][status],
                            "change": counts_now.value["by_status"][status]
                            - counts_before.value["by_status"][status]}
                   for status, label in STATUS_LABELS.items()},
        "total": {"now": counts_now.value["total"], "week_before": counts_before.value["total"]},
        "stuck": {"count": len(stuck), "by_csm": dict(sorted(stuck_by_csm.items()))},
        "blocking_publication": {"records": len(blocking), "by_code": dict(sorted(by_code.items())),
                                 "items": sorted(blocking.values(), key=lambda e: (e["csm"] or "", e["id"]))},
        "new_candidates": [{"id": r["id"], "csm": r["csm"], "account_name": r["account_name"],
                            "kpi_improvement_pct": r["kpi_improvement_pct"], "best_metric": r["best_metric"],
                            "nps": r["nps"], "candidate_since": r["candidate_since"].isoformat()}
                           for r in new_candidates.value if r["candidate_since"] <= as_of],
        "published": [{"id": r["id"], "csm": r["csm"], "published_at": r["to_at"].isoformat(),
                       "days_from_commitment": r["days"]} for r in published.value],
        "cycle_times": {"quarter": quarter,
                        "this_quarter": this_quarter["stages"] if this_quarter else None,
                        "this_quarter_approver_roles": this_quarter["approver_roles"] if this_quarter else None,
                        "all_time": cycle.value["overall"]["stages"],
                        "all_time_approver_roles": cycle.value["overall"]["approver_roles"]},
        "read_to": {answer.projector: answer.read_to.to_dict()
                    for answer in (counts_now, blockers, new_candidates, cycle)},
    }


def _days(value) -> str:
    return "–" if value is None else f"{value:g}"


def _md_escape(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for a wiki page or a chat message."""
    e = _md_escape
    lines = [f"# Case study weekly review, week ending {report['as_of'][:10]}", "",
             "## Pipeline", "", "| Status | Now | A week before | Change |", "|---|---:|---:|---:|"]
    for row in report["counts"].values():
        lines.append(f"| {row['label']} | {row['now']} | {row['week_before']} | {row['change']:+d} |")
    lines.append(f"| **Total** | {report['total']['now']} | {report['total']['week_before']} | |")
    lines += ["", f"## Stuck ({report['stuck']['count']})", ""]
    if not report["stuck"]["by_csm"]:
        lines.append("Nothing is stuck.")
    for csm, rows in report["stuck"]["by_csm"].items():
        lines.append(f"### {e(csm) or '(no CSM)'}")
        lines += [f"- **{e(r['id'])}** ({e(r['account_name'])}, {r['status']}): {e(r['reason'])}" for r in rows]
        lines.append("")
    blocking = report["blocking_publication"]
    lines += ["", f"## What blocks publication ({blocking['records']} records)", ""]
    if blocking["by_code"]:
        lines.append(", ".join(f"{code}: {count}" for code, count in blocking["by_code"].items()))
        lines.append("")
    for item in blocking["items"]:
        reasons = "; ".join(e(b["reason"]) for b in item["blockers"])
        lines.append(f"- **{e(item['id'])}** ({e(item['account_name'])}, CSM {e(item['csm'])}): {reasons}")
    lines += ["", f"## New candidates ({len(report['new_candidates'])})", ""]
    lines += [f"- **{e(c['id'])}** ({e(c['account_name'])}, CSM {e(c['csm'])}): {e(c['best_metric'])} "
              f"{c['kpi_improvement_pct']:+g} %, NPS {c['nps']}" for c in report["new_candidates"]] or ["None."]
    lines += ["", f"## Published this week ({len(report['published'])})", ""]
    lines += [f"- **{e(p['id'])}** (CSM {e(p['csm'])}), {_days(p['days_from_commitment'])} days from commitment"
              for p in report["published"]] or ["None."]
    cycle = report["cycle_times"]
    lines += ["", "## Cycle times (days)", "",
              f"| Stage | {cycle['quarter']} median | {cycle['quarter']} p90 | All-time median | All-time p90 |",
              "|---|---:|---:|---:|---:|"]
    for stage in STAGES:
        now = (cycle["this_quarter"] or {}).get(stage) or {}
        ever = cycle["all_time"][stage]
        lines.append(f"| {stage} | {_days(now.get('median_days'))} | {_days(now.get('p90_days'))} | "
                     f"{_days(ever['median_days'])} | {_days(ever['p90_days'])} |")
    for role, ever in cycle["all_time_approver_roles"].items():
        now = (cycle["this_quarter_approver_roles"] or {}).get(role) or {}
        lines.append(f"| {role} answers | {_days(now.get('median_days'))} | {_days(now.get('p90_days'))} | "
                     f"{_days(ever['median_days'])} | {_days(ever['p90_days'])} |")
    lines += ["", "_Projections read to: " + ", ".join(
        f"{name} position {mark['position']} ({mark['recorded_at'] or 'nothing yet'})"
        for name, mark in report["read_to"].items()) + "._", ""]
    return "\n".join(lines)


_HTML = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Case study weekly review, week ending {{ r.as_of[:10] }}</title>
<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .6rem}td.n{text-align:right}</style>
</head><body>
<h1>Case study weekly review, week ending {{ r.as_of[:10] }}</h1>
<h2>Pipeline</h2>
<table><tr><th>Status</th><th>Now</th><th>A week before</th><th>Change</th></tr>
{% for row in r.counts.values() %}<tr><td>{{ row.label }}</td><td class="n">{{ row.now }}</td>
<td class="n">{{ row.week_before }}</td><td class="n">{{ "%+d"|format(row.change) }}</td></tr>{% endfor %}
<tr><th>Total</th><td class="n">{{ r.total.now }}</td><td class="n">{{ r.total.week_before }}</td><td></td></tr></table>
<h2 id="stuck">Stuck ({{ r.stuck.count }})</h2>
{% for csm, rows in r.stuck.by_csm.items() %}<h3>{{ csm or "(no CSM)" }}</h3><ul>
{% for s in rows %}<li><strong>{{ s.id }}</strong> ({{ s.account_name }}, {{ s.status }}): {{ s.reason }}</li>{% endfor %}
</ul>{% else %}<p>Nothing is stuck.</p>{% endfor %}
<h2 id="blockers">What blocks publication ({{ r.blocking_publication.records }} records)</h2><ul>
{% for item in r.blocking_publication["items"] %}<li><strong>{{ item.id }}</strong> ({{ item.account_name }}, CSM {{ item.csm }}):
{% for b in item.blockers %}{{ b.reason }}{% if not loop.last %}; {% endif %}{% endfor %}</li>{% endfor %}</ul>
<h2 id="candidates">New candidates ({{ r.new_candidates|length }})</h2><ul>
{% for c in r.new_candidates %}<li><strong>{{ c.id }}</strong> ({{ c.account_name }}, CSM {{ c.csm }}):
{{ c.best_metric }} {{ "%+g"|format(c.kpi_improvement_pct) }} %, NPS {{ c.nps }}</li>{% else %}<li>None.</li>{% endfor %}</ul>
<h2 id="published">Published this week ({{ r.published|length }})</h2><ul>
{% for p in r.published %}<li><strong>{{ p.id }}</strong> (CSM {{ p.csm }}), {{ p.days_from_commitment }} days from commitment</li>
{% else %}<li>None.</li>{% endfor %}</ul>
<h2 id="cycle-times">Cycle times (days)</h2>
<table><tr><th>Stage</th><th>{{ r.cycle_times.quarter }} median</th><th>{{ r.cycle_times.quarter }} p90</th>
<th>All-time median</th><th>All-time p90</th></tr>
{% for stage, ever in r.cycle_times.all_time.items() %}{% set now = (r.cycle_times.this_quarter or {}).get(stage, {}) %}
<tr><td>{{ stage }}</td><td class="n">{{ now.median_days }}</td><td class="n">{{ now.p90_days }}</td>
<td class="n">{{ ever.median_days }}</td><td class="n">{{ ever.p90_days }}</td></tr>{% endfor %}
{% for role, ever in r.cycle_times.all_time_approver_roles.items() %}
{% set now = (r.cycle_times.this_quarter_approver_roles or {}).get(role, {}) %}
<tr><td>{{ role }} answers</td><td class="n">{{ now.median_days }}</td><td class="n">{{ now.p90_days }}</td>
<td class="n">{{ ever.median_days }}</td><td class="n">{{ ever.p90_days }}</td></tr>{% endfor %}</table>
<p><small>Projections read to: {% for name, mark in r.read_to.items() %}{{ name }} position {{ mark.position }}
({{ mark.recorded_at or "nothing yet" }}){% if not loop.last %}, {% endif %}{% endfor %}.</small></p>
</body></html>
""")


def to_html(report: dict[str, Any]) -> str:
    """The report as a standalone HTML page (every value escaped)."""
    return _HTML.render(r=report)
