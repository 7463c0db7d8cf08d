"""``casestudies import``: batch intake from CRM exports."""
from __future__ import annotations

import sys

import click

from service.cli.common import database_errors, services


@click.group("import")
def import_() -> None:
    """Batch intake from CRM exports."""


@import_.command("deals")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--actor", default="deal-import", show_default=True,
              help="Name recorded as the actor of the events the import writes.")
def import_deals(file: str, actor: str) -> None:
    """Create the case studies of a CSV export of closed deals; safe to re-run daily.

    Rows of accepted deals become records (once: a deal imported or posted before is reported as
    existing); other rows store nothing. Exits 1 when any row is invalid, after importing the rest."""
    import csv

    from service.intake.csv_import import ImportFileError, count_rows, import_rows, read_rows
    from service.times import utcnow

    wired = services()
    unreadable = None
    with open(file, encoding="utf-8-sig", newline="") as source, database_errors():
        try:
            total = count_rows(source)
            ignored, rows = read_rows(source)
        except (ImportFileError, UnicodeDecodeError, csv.Error) as error:
            raise click.ClickException(f"{file}: {error}") from None
        report = []
        with click.progressbar(length=total, label="importing deals", file=sys.stderr) as bar:
            try:
                for outcome in import_rows(wired.store, rows, actor=actor, now=utcnow()):
                    report.append(outcome)
                    bar.update(1)
            except (csv.Error, UnicodeDecodeError) as error:  # the rows read before it are imported
                unreadable = f"{file}: cannot read on after row {len(report)}: {error}"
    counts = {decision: sum(1 for o in report if o.decision == decision)
              for decision in ("created", "exists", "not_created", "invalid")}
    for outcome in report:
        if outcome.decision in ("not_created", "invalid"):
            label = "skipped" if outcome.decision == "not_created" else "INVALID"
            click.echo(f"line {outcome.line} (deal {outcome.deal_id or '?'}): {label}: {outcome.reason}")
    if ignored:
        click.echo(f"ignored columns: {', '.join(ignored)}")
    click.echo(f"{len(report)} rows: {counts['created']} created, {counts['exists']} already existed, "
               f"{counts['not_created']} skipped (not accepted), {counts['invalid']} invalid")
    if unreadable:
        click.echo(unreadable, err=True)
    sys.exit(1 if counts["invalid"] or unreadable else 0)
