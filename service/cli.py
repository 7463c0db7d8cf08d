"""The ``casestudies`` command: serve, migrate, manage API keys."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime

import click
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from service.access.keys import KeyRequestError, KeyStore
from service.access.roles import ROLES
from service.config import Settings, SettingsError
from service.domain import APPROVER_ROLES
from service.events.backends import make_engine


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def _database_errors():
    """Turn database failures into one clear line instead of a traceback."""
    try:
        yield
    except ArgumentError as error:
        raise click.ClickException(f"DATABASE_URL is not a database URL: {error}") from None
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        hint = " (has `casestudies db upgrade` been run?)" if "no such table" in reason or \
            "does not exist" in reason else ""
        raise click.ClickException(f"database error: {reason}{hint}") from None


@click.group()
def main() -> None:
    """Case study pipeline service. Settings come from the environment (see the README)."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), envvar="PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (more than 1 uses gunicorn's gthread worker).")
@click.option("--projectors/--no-projectors", default=True, show_default=True,
              help="Also run `casestudies projections run` beside the server (turn off where a separate "
                   "worker keeps the projections, as in docker-compose.yml).")
@click.option("--notifications/--no-notifications", default=True, show_default=True,
              help="Also run `casestudies notifications run` beside the server (turn off where a separate "
                   "dispatcher delivers the outbox, as in docker-compose.yml).")
def serve(host: str, port: int, workers: int, threads: int, projectors: bool, notifications: bool) -> None:
    """Serve the API with gunicorn."""
    import os
    import shutil
    import subprocess
    import tempfile

    from service.wsgi import serve as run

    _settings()
    # Each gunicorn worker is a process: its metrics go to files here, summed by whichever
    # worker answers a scrape. Set before anything imports prometheus_client.
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="casestudies-metrics-")
    beside = [group for group, wanted in (("projections", projectors), ("notifications", notifications)) if wanted]
    helpers = [subprocess.Popen([sys.executable, "-m", "service.cli", group, "run", "--parent", str(os.getpid())])
               for group in beside]
    try:
        run(host=host, port=port, workers=workers, threads=threads)
    finally:
        for helper in helpers:
            helper.terminate()
        for helper in helpers:
            try:
                helper.wait(10)
            except subprocess.TimeoutExpired:
                helper.kill()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Migrate the database at DATABASE_URL to the newest schema."""
    from service import migrations

    settings = _settings()
    with _database_errors():
        engine = make_engine(settings.database_url)
        migrations.upgrade(engine)
        click.echo(f"database at revision {migrations.current_revision(engine)}")
        engine.dispose()


@main.group()
def keys() -> None:
    """API keys."""


def _key_store() -> KeyStore:
    with _database_errors():
        return KeyStore(make_engine(_settings().database_url))


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who or what uses the key; it becomes the events' actor.")
def keys_create(role: str, name: str) -> None:
    """Create a key and print it once; only its hash is stored."""
    try:
        with _database_errors():
            key = _key_store().create(name, role)
    except KeyRequestError as error:
        raise click.ClickException(str(error)) from None
    click.echo(key)
    click.echo(f"created {role} key {name!r}; store it now, it cannot be shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """List keys (names, roles, prefixes; never the keys)."""
    with _database_errors():
        infos = _key_store().list()
    for info in infos:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        click.echo(f"{info.name}\t{info.role}\t{info.prefix}…\t{info.created_at:%Y-%m-%d %H:%M}\t{state}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key called NAME; it stops working at once."""
    try:
        with _database_errors():
            _key_store().revoke(name)
    except KeyRequestError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"revoked {name!r}")


@main.group()
def audit() -> None:
    """For auditors: export approval history, verify hash chains, keep digests."""


def _services(*, log_stream=sys.stderr):
    from service.bootstrap import build
    from service.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level, stream=log_stream)
    with _database_errors():
        return build(settings)


def _when(value: str | None, *, start: bool) -> datetime | None:
    from service.times import EARLIEST, FORMS, LATEST, parse_moment

    if value is None:
        return None
    try:
        return parse_moment(value, date_is_start=start)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not {FORMS}, from {EARLIEST.year} to {LATEST.year}") from None


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
    import csv

    import orjson

    from service.api.audit import ROW_COLUMNS, csv_cells, row_json
    from service.api.params import csv_cell

    services = _services()
    filters = {"start": _when(start, start=True), "end": _when(end, start=False), "csm": csm}
    if filters["start"] and filters["end"] and filters["end"] <= filters["start"]:
        raise click.BadParameter("--to must be later than --from")
    with _database_errors():
        total = services.approvals.count(**filters)  # before the role filter: an upper bound
        writer = csv.writer(output, lineterminator="\r\n") if fmt == "csv" else None
        if writer:
            writer.writerow(ROW_COLUMNS)
        written = 0
        with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
            for row in services.approvals.rows(**filters, role=role):
                item = row_json(row)
                if writer:
                    writer.writerow([csv_cell(cell) for cell in csv_cells(item)])
                else:
                    output.write(orjson.dumps(item).decode() + "\n")
                written += 1
                bar.update(1)
            bar.update(total - written)  # with --role, fewer rows than counted
    click.echo(f"exported {written} rows", err=True)


@audit.command("verify")
@click.option("--id", "stream_id", help="Only this case study.")
@click.option("--digest", "digest_file", type=click.File("rb"),
              help="A digest written earlier by `casestudies audit digest`: check the store still leads to it.")
def audit_verify(stream_id, digest_file) -> None:
    """Recompute hash chains and report the first broken link of each stream (exit 1 if any)."""
    import orjson

    from service.audit.digests import DigestError, check_digest

    services = _services()
    with _database_errors():
        if digest_file is not None:
            try:
                document = orjson.loads(digest_file.read())
            except orjson.JSONDecodeError:
                raise click.ClickException("the digest file is not JSON") from None
            try:
                count = document.get("event_count") if isinstance(document, dict) else None
                with click.progressbar(length=count if type(count) is int and count >= 0 else 0,
                                       label="checking digest", file=sys.stderr) as bar:
                    findings, checked = check_digest(services.store, document, progress=bar.update)
            except DigestError as error:
                raise click.ClickException(str(error)) from None
            for finding in findings:
                click.echo(f"BROKEN {finding.stream_id}: {finding.problem} (version {finding.version}; "
                           f"digest {finding.expected_hash}, found {finding.found_hash})")
            click.echo(f"{checked - len(findings)} of {checked} streams match the digest of "
                       f"{document['created_at']}")
            sys.exit(1 if findings else 0)
        if stream_id:
            check = services.verification.verify(stream_id)
            if check is None:
                raise click.ClickException(f"no case study with id {stream_id!r}")
            _report(check)
            sys.exit(0 if check.intact else 1)
        streams = 0
        broken = []
        with click.progressbar(length=services.verification.event_count(), label="verifying", file=sys.stderr) as bar:
            for check in services.verification.verify_all(progress=bar.update):
                streams += 1
                if not check.intact:
                    broken.append(check)
    for check in broken:
        _report(check)
    if broken:
        click.echo(f"{len(broken)} of {streams} streams are broken")
        sys.exit(1)
    click.echo(f"intact: every chain checks out ({streams} streams)")


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

    services = _services()
    with _database_errors():
        try:
            with click.progressbar(length=services.verification.event_count(), label="hashing",
                                   file=sys.stderr) as bar:
                document = write_digest(services.verification, progress=bar.update)
        except DigestError as error:
            raise click.ClickException(str(error)) from None
    output.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    click.echo(f"digest of {document['stream_count']} streams, {document['event_count']} events; "
               f"sha256 {document['sha256']}", err=True)


@main.group()
def projections() -> None:
    """Read models kept from the global feed: run, rebuild, verify, status."""


class _Bar:
    """A progress bar on standard error whose length is known once the work has counted it."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def start(self, length: int) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar = click.progressbar(length=length, label=self.label, file=sys.stderr)
        self.bar.__enter__()

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


@contextmanager
def _busy():
    from service.projections.checkpoints import ProjectionFailed
    from service.projections.rebuild import ProjectionBusy

    try:
        yield
    except (ProjectionBusy, ProjectionFailed) as error:
        raise click.ClickException(str(error)) from None


def _projector_names(services, name: str | None) -> list[str] | None:
    if name is None:
        return None
    if name not in services.runner.projectors:
        raise click.BadParameter(f"no projector {name!r}; there are {', '.join(services.runner.projectors)}",
                                 param_hint="NAME")
    return [name]


@projections.command("run")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds to wait when the feed has nothing new.")
@click.option("--parent", type=int, hidden=True, help="Stop when this process is gone (set by serve).")
def projections_run(poll: float, parent: int | None) -> None:
    """Keep every projector following the feed until stopped (SIGTERM or Ctrl-C)."""
    import signal
    import threading

    services = _services(log_stream=sys.stdout)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _database_errors():
        services.runner.run(stop, poll_seconds=poll, parent_pid=parent)


@projections.command("rebuild")
@click.argument("name", required=False)
def projections_rebuild(name: str | None) -> None:
    """Project the whole store afresh (one projector, or all) and swap it in when complete."""
    services = _services()
    names = _projector_names(services, name)
    with _database_errors():
        with _Bar("rebuilding") as bar, _busy():
            mark = services.runner.rebuilder.rebuild(names, total=bar.start, progress=bar.update)
    click.echo(f"rebuilt {', '.join(names or services.runner.projectors)} to position {mark.position}")


@projections.command("verify")
@click.argument("name", required=False)
def projections_verify(name: str | None) -> None:
    """Rebuild into scratch tables and report every row that differs from the live model (exit 1 if any)."""
    services = _services()
    names = _projector_names(services, name)
    with _database_errors():
        with _Bar("verifying") as bar, _busy():
            results = services.runner.rebuilder.verify(names, total=bar.start, progress=bar.update)
    differing = 0
    for projector, result in results.items():
        for difference in result.differences:
            differing += 1
            click.echo(f"DIFFERS {projector} {difference.table} {difference.key}: live {difference.live}, "
                       f"rebuilt {difference.rebuilt}")
        skipped = f"; {result.skipped} records changed meanwhile and were left out" if result.skipped else ""
        state = "matches" if not result.differences else f"{len(result.differences)} rows differ"
        click.echo(f"{projector}: {state} a rebuild to position {result.checked_to.position}{skipped}")
    sys.exit(1 if differing else 0)


@projections.command("status")
def projections_status() -> None:
    """Each projector's checkpoint, lag and last error."""
    services = _services()
    with _database_errors():
        status = services.runner.status()
    for row in status["projectors"]:
        error = f"; FAILING at position {row['last_error']['position']}: {row['last_error']['message']}" \
            if row["failing"] else ""
        click.echo(f"{row['name']}: position {row['checkpoint']['position']} of {status['head']['position']}, "
                   f"{row['lag_events']} events / {row['lag_seconds']} s behind{error}")
    held = status["held_back"]
    if held["events"]:
        click.echo(f"{held['events']} committed events are held back by an open transaction: {held['by_transaction']}")


@main.group("import")
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

    services = _services()
    unreadable = None
    with open(file, encoding="utf-8-sig", newline="") as source, _database_errors():
        try:
            total = count_rows(source)
            ignored, rows = read_rows(source)
        except (ImportFileError, UnicodeDecodeError, csv.Error) as error:
            raise click.ClickException(f"{file}: {error}") from None
        report = []
        with click.progressbar(length=total, label="importing deals", file=sys.stderr) as bar:
            try:
                for outcome in import_rows(services.store, rows, actor=actor, now=utcnow()):
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


@main.group()
def notifications() -> None:
    """The outbox of Slack messages and webhook deliveries: run the dispatcher, list, retry."""


@notifications.command("run")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds to wait when nothing is due.")
@click.option("--parent", type=int, hidden=True, help="Stop when this process is gone (set by serve).")
def notifications_run(poll: float, parent: int | None) -> None:
    """Deliver the outbox until stopped (SIGTERM or Ctrl-C), and announce newly stuck records."""
    import signal
    import threading

    from service.bootstrap import dispatcher

    services = _services(log_stream=sys.stdout)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _database_errors():
        dispatcher(services).run(stop, poll_seconds=poll, parent_pid=parent)


@notifications.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "dead"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def notifications_list(status: str | None, limit: int) -> None:
    """Messages oldest first: id, destination, kind, record, status, attempts, last error."""
    services = _services()
    with _database_errors():
        found, _ = services.outbox.list(status=status, limit=limit)
    for item in found:
        target = item.destination + (f":{item.subscription_id}" if item.subscription_id else "")
        click.echo(f"{item.id}\t{target}\t{item.kind}\t{item.stream_id or '-'}\t{item.status}\t"
                   f"{item.attempts}\t{item.last_error or ''}")


@notifications.command("retry")
@click.argument("message_id", required=False, type=int)
@click.option("--all-dead", is_flag=True, help="Every dead message.")
def notifications_retry(message_id: int | None, all_dead: bool) -> None:
    """Put a dead message (or --all-dead) back in the queue with its attempts reset."""
    if (message_id is None) == (not all_dead):
        raise click.UsageError("give a MESSAGE_ID or --all-dead")
    services = _services()
    with _database_errors():
        count = services.outbox.retry(message_id=message_id)
    if message_id is not None and count == 0:
        raise click.ClickException(f"no dead message {message_id}")
    click.echo(f"{count} messages queued again")


@main.group()
def webhooks() -> None:
    """Outgoing webhooks: CloudEvents for other tools, signed with a shared secret."""


@webhooks.command("add")
@click.argument("url")
@click.option("--types", required=True, help="Event types, comma-separated (committed,published), or * for all.")
@click.option("--secret", help="Shared secret that signs each delivery (16-200 characters); made up if not given.")
def webhooks_add(url: str, types: str, secret: str | None) -> None:
    """Subscribe URL to events of the given types."""
    from service.notifications.subscriptions import SubscriptionError

    services = _services()
    try:
        with _database_errors():
            subscription, secret_used = services.subscriptions.add(url, types.split(","), secret)
    except SubscriptionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"webhook {subscription.id}: {subscription.url} for {', '.join(subscription.types)}")
    if secret is None:
        click.echo(f"secret (shown once): {secret_used}")


@webhooks.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Also removed subscriptions.")
def webhooks_list(include_removed: bool) -> None:
    """Subscriptions: id, URL, types, the secret's fingerprint, created (and removed)."""
    services = _services()
    with _database_errors():
        found = services.subscriptions.list(include_removed=include_removed)
    for item in found:
        removed = f"\tremoved {item.removed_at:%Y-%m-%d %H:%M}" if item.removed_at else ""
        click.echo(f"{item.id}\t{item.url}\t{','.join(item.types)}\tsecret {item.secret_fingerprint}\t"
                   f"{item.created_at:%Y-%m-%d %H:%M}{removed}")


@webhooks.command("remove")
@click.argument("subscription_id", type=int)
def webhooks_remove(subscription_id: int) -> None:
    """Stop delivering to a subscription; its undelivered messages become dead."""
    from service.notifications.subscriptions import SubscriptionError

    services = _services()
    try:
        with _database_errors():
            services.subscriptions.remove(subscription_id)
    except SubscriptionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"removed webhook {subscription_id}")


@main.group()
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
    from service.times import utcnow

    services = _services()
    now = utcnow()
    with _database_errors():
        document = weekly_report(services.projections, services.stuck,
                                 as_of=_when(as_of, start=False) or now, now=now)
    if fmt == "json":
        output.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        output.write(to_markdown(document) if fmt == "md" else to_html(document))


if __name__ == "__main__":
    sys.exit(main())
