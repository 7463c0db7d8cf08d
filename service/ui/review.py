"""The reporting pages: what is stuck and what blocks publication, the weekly review, cycle times
and candidates. Each reads one view of the projections, in one of its key's costly-read slots."""
from __future__ import annotations

from datetime import timedelta
from itertools import groupby

from flask import request, url_for

from service.access.roles import PROJECTION_READERS
from service.api import projections as csv
from service.api import services
from service.api.limits import costly
from service.api.projections import blocker_items, stuck_item
from service.domain import STATUS_LABELS, STUCK_CODES
from service.domain.reporting import BLOCKER_CODES, STAGES
from service.reports.weekly import WEEK, weekly_report
from service.times import utcnow
from service.ui import web
from service.ui.web import bp, page, render

PAGE = 50
CANDIDATES_SHOWN = 100
ORDERS = {"csm": "by CSM, longest stuck first", "longest": "longest stuck first"}


def _grouped(items: list[dict]) -> list[tuple[str, list[dict]]]:
    """Consecutive items of one CSM together, in the order given."""
    return [(csm or "(no CSM)", list(group)) for csm, group in groupby(items, key=lambda item: item["csm"])]


def _listing(template: str, kind: str, filters: dict, answer, items: list[dict], counts: dict, reference,
             order: str, codes) -> tuple[str, int]:
    """A stuck or blockers page: its rows (grouped by CSM in that order), counts, pages and CSV link."""
    raw_as_of = request.args.get("as_of") or ""
    given = {**filters, "as_of": raw_as_of}
    return render(template, items=items, groups=_grouped(items) if order == "csm" else None, counts=counts,
                  filters=filters, order=order, orders=ORDERS, codes=codes, labels=STATUS_LABELS,
                  as_of=raw_as_of, reference=reference, position=answer.read_to.position,
                  pages=web.page_links(f"ui.{kind}", answer.next_cursor, **given, sort=order),
                  csv=url_for(f"ui.{kind}_csv", **{key: value for key, value in given.items() if value}))


@bp.get("/stuck")
@page(*PROJECTION_READERS)
@costly
def stuck():
    """The stuck list with each reason, grouped by CSM; sortable and paginated."""
    filters = {"csm": web.text("csm"), "code": web.choice("code", STUCK_CODES),
               "status": web.choice("status", STATUS_LABELS)}
    order = web.choice("sort", ORDERS) or "csm"
    with services().projections.view(as_of=web.moment()) as view:
        answer = view.stuck(**filters, limit=PAGE, cursor=web.cursor(), order=order)
        counts = view.stuck_counts().value
    return _listing("stuck.html", "stuck", filters, answer, [stuck_item(item) for item in answer.value], counts,
                    view.reference, order, STUCK_CODES)


@bp.get("/blockers")
@page(*PROJECTION_READERS)
@costly
def blockers():
    """What blocks publication, per record and counted per code; sortable and paginated."""
    filters = {"csm": web.text("csm"), "code": web.choice("code", BLOCKER_CODES)}
    order = web.choice("sort", ORDERS) or "csm"
    with services().projections.view(as_of=web.moment()) as view:
        answer = view.blockers(**filters, limit=PAGE, cursor=web.cursor(), order=order)
        items = blocker_items(view, answer.value)
        counts = view.blocked_counts().value
    return _listing("blockers.html", "blockers", filters, answer, items, counts, view.reference, order,
                    BLOCKER_CODES)


@bp.get("/weekly")
@page(*PROJECTION_READERS)
@costly
def weekly():
    """The weekly review for the week ending on the chosen day (default now), and the change since
    the week before."""
    ending = web.moment("week_ending")
    now = utcnow()
    wired = services()
    with wired.projections.view(as_of=ending if ending and ending < now else None) as view:
        report = weekly_report(view, wired.links, as_of=view.reference)
    reference = view.reference
    return render("weekly.html", report=report, reference=reference, labels=STATUS_LABELS, stages=STAGES,
                  week_ending=reference.date().isoformat(),
                  earlier=url_for("ui.weekly", week_ending=(reference - WEEK).date().isoformat()),
                  later=(url_for("ui.weekly", week_ending=(reference + WEEK).date().isoformat())
                         if reference + WEEK < now + timedelta(days=1) else None))


@bp.get("/cycle-times")
@page(*PROJECTION_READERS)
@costly
def cycle_times():
    """Median and 90th-percentile days per stage and approver role by quarter, as charts with their
    tables, and the candidates."""
    csm = web.text("csm")
    with services().projections.view() as view:
        cycle = view.cycle_times(csm=csm).value
        candidates = view.candidates(csm=csm, limit=CANDIDATES_SHOWN).value
        candidate_count = view.candidate_count()
    quarters = [quarter["quarter"] for quarter in cycle["quarters"]]
    charts = []
    for group, title, names in (("stages", "Stage", list(STAGES)), ("approver_roles", "Approver role", None)):
        names = names or sorted({name for quarter in cycle["quarters"] for name in quarter[group]})
        for figure, label in (("median_days", "median"), ("p90_days", "90th percentile")):
            charts.append({"id": f"{group}-{figure}", "title": f"{title}s: {label} days by quarter",
                           "row_label": title, "quarters": quarters,
                           "rows": [(name, [quarter[group].get(name, {}).get(figure) for quarter in cycle["quarters"]])
                                    for name in names]})
    return render("cycle_times.html", charts=charts, overall=cycle["overall"], stages=STAGES, csm=csm,
                  candidates=candidates, candidate_count=candidate_count,
                  threshold=services().settings.candidate_kpi_improvement_pct,
                  candidates_csv=url_for("ui.candidates_csv", **({"csm": csm} if csm else {})),
                  cycle_csv=url_for("ui.cycle_times_csv", **({"csm": csm} if csm else {})))


# -- the same views as CSV, for a signed-in person (the API's CSV, which wants a key) ----------------
@bp.get("/board.csv")
@page(*PROJECTION_READERS)
@costly
def board_csv():
    """The pipeline's counts as CSV, now or as known at ``as_of``."""
    with services().projections.view(as_of=web.moment()) as view:
        return csv.pipeline_csv(view.pipeline())


@bp.get("/stuck.csv")
@page(*PROJECTION_READERS)
@costly
def stuck_csv():
    """Every stuck record the stuck page's filters select, streamed."""
    return csv.stuck_csv(web.moment(), {"csm": web.text("csm"), "code": web.choice("code", STUCK_CODES),
                                        "status": web.choice("status", STATUS_LABELS)})


@bp.get("/blockers.csv")
@page(*PROJECTION_READERS)
@costly
def blockers_csv():
    """Every blocker the blockers page's filters select."""
    with services().projections.view(as_of=web.moment()) as view:
        answer = view.blockers(csm=web.text("csm"), code=web.choice("code", BLOCKER_CODES))
        return csv.blockers_csv(answer, blocker_items(view, answer.value))


@bp.get("/cycle-times.csv")
@page(*PROJECTION_READERS)
@costly
def cycle_times_csv():
    with services().projections.view() as view:
        return csv.cycle_times_csv(view.cycle_times(csm=web.text("csm")))


@bp.get("/candidates.csv")
@page(*PROJECTION_READERS)
@costly
def candidates_csv():
    with services().projections.view() as view:
        answer = view.candidates(csm=web.text("csm"))
    return csv.candidates_csv(answer, csv.candidate_items(answer))
