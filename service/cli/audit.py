"""``casestudies audit``: export the approval history, verify hash chains, keep digests."""
from __future__ import annotations

import sys

import click

from service.cli.common import database_errors, services, when
from service.domain import APPROVER_ROLES


@click.group()
def audit() -> None:
    """For auditors: export approval history, verify hash chains, keep digests."""


@audit.command("export")
@click.option("--from", "start", help="First day or time (business time), e.g. 2026-10-01.")
@click.option("--to", "end", help="Last day, or the time before which to stop.")
@click.option("--csm", help="Only records of this CSM.")
@click.option("--role", type=click.Choice(APPROVER_ROLES))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: standard output).")
def audit_export(start, end, csm, role, fmt, output) -> None:
    """Every approval request and answer in a period, across records, oldest first."""
    import orjson

    from service.audit.approvals import ApprovalRow
    from service.spreadsheets import write_csv

    wired = services()
    filters = {"start": when(start, start=True), "end": when(end, start=False), "csm": csm}
    if filters["start"] and filters["end"] and filters["end"] <= filters["start"]:
        raise click.BadParameter("--to must be later than --from")
    written = 0
    reveal = wired.opener().data  # approvers' names, in clear
    with database_errors():
        total = wired.approvals.count(**filters)  # before the role filter: an upper bound
        with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
            def items():
                nonlocal written
                for row in wired.approvals.rows(**filters, role=role):
                    written += 1
                    bar.update(1)
                    yield reveal(row.to_dict())

            if fmt == "csv":
                write_csv(output, ApprovalRow.CSV_COLUMNS, (ApprovalRow.csv_cells(item) for item in items()))
            else:
                for item in items():
                    output.write(orjson.dumps(item).decode() + "\n")
            bar.update(total - written)  # with --role, fewer rows than counted
    click.echo(f"exported {written} rows", err=True)


@audit.command("verify")
@click.option("--id", "stream_id", help="Only this case study.")
@click.option("--digest", "digest_file", type=click.File("rb"),
              help="A digest written earlier by `casestudies audit digest`: check the store still leads to it.")
def audit_verify(stream_id, digest_file) -> None:
    """Recompute hash chains and report the first broken link of each stream (exit 1 if any)."""
    wired = services()
    with database_errors():
        if digest_file is not None:
            intact = _against_digest(wired, digest_file)
        elif stream_id:
            intact = _one_stream(wired, stream_id)
        else:
            intact = _every_stream(wired)
    sys.exit(0 if intact else 1)


def _against_digest(wired, digest_file) -> bool:
    """Check that every stream a digest recorded still leads to the head it recorded."""
    import orjson

    from service.audit.digests import DigestError, check_digest

    try:
        document = orjson.loads(digest_file.read())
    except orjson.JSONDecodeError:
        raise click.ClickException("the digest file is not JSON") from None
    try:
        count = document.get("event_count") if isinstance(document, dict) else None
        with click.progressbar(length=count if type(count) is int and count >= 0 else 0,
                               label="checking digest", file=sys.stderr) as bar:
            reseals = wired.people.trusted_reseals() if wired.people else None  # migration 0006's, signed
            findings, checked = check_digest(wired.store, document, reseals=reseals, progress=bar.update)
    except DigestError as error:
        raise click.ClickException(str(error)) from None
    for finding in findings:
        click.echo(f"BROKEN {finding.stream_id}: {finding.problem} (version {finding.version}; "
                   f"digest {finding.expected_hash}, found {finding.found_hash})")
    click.echo(f"{checked - len(findings)} of {checked} streams match the digest of {document['created_at']}")
    return not findings


def _one_stream(wired, stream_id: str) -> bool:
    check = wired.verification.verify(stream_id)
    if check is None:
        raise click.ClickException(f"no case study with id {stream_id!r}")
    _report(check)
    return check.intact


def _every_stream(wired) -> bool:
    streams, broken = 0, []
    with click.progressbar(length=wired.verification.event_count(), label="verifying", file=sys.stderr) as bar:
        for check in wired.verification.verify_all(progress=bar.update):
            streams += 1
            if not check.intact:
                broken.append(check)
    for check in broken:
        _report(check)
    if broken:
        click.echo(f"{len(broken)} of {streams} streams are broken")
    else:
        click.echo(f"intact: every chain checks out ({streams} streams)")
    return not broken


def _report(check) -> None:
    if check.intact:
        click.echo(f"intact {check.stream_id}: {check.events} events, head {check.head_hash}")
    else:
        click.echo(f"BROKEN {check.stream_id} at version {check.broken_version}: {check.problem} "
                   f"(expected {check.expected_hash}, found {check.found_hash})")


@audit.command("digest")
@click.option("--output", "-o", type=click.File("wb"), default="-", help="File to write (default: standard output).")
def audit_digest(output) -> None:
    """Write the verified head hash of every stream, for an auditor to keep outside the system."""
    import orjson

    from service.audit.digests import DigestError, write_digest

    wired = services()
    with database_errors():
        try:
            with click.progressbar(length=wired.verification.event_count(), label="hashing",
                                   file=sys.stderr) as bar:
                document = write_digest(wired.verification, progress=bar.update)
        except DigestError as error:
            raise click.ClickException(str(error)) from None
    output.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    click.echo(f"digest of {document['stream_count']} streams, {document['event_count']} events; "
               f"sha256 {document['sha256']}", err=True)
