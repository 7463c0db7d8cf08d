"""``casestudies report``: reports for people."""
from __future__ import annotations

import click

from service.cli.common import database_errors, services, when


@click.group()
def report() -> None:
    """Reports for people."""


@report.command("weekly")
@click.option("--as-of", "as_of", help="End of the week to report (a date means its end, UTC); default now.")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: standard output).")
def report_weekly(as_of: str | None, fmt: str, output) -> None:
    """The weekly review: counts and change, stuck, blockers, candidates, published, cycle times."""
    import orjson

    from service.reports.weekly import to_html, to_markdown, weekly_report

    wired = services()
    with database_errors(), wired.projections.view(as_of=when(as_of, start=False)) as view:
        document = weekly_report(view, wired.links, as_of=view.reference)
        document = wired.opener().data(document)  # any name in a blocker's facts, in clear
    if fmt == "json":
        output.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        output.write(to_markdown(document) if fmt == "md" else to_html(document))
