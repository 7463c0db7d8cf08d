"""``casestudies notifications``: run the dispatcher, list the outbox, retry or discard dead messages."""
from __future__ import annotations

import sys

import click

from service.cli.common import database_errors, services, stop_on_signals


@click.group()
def notifications() -> None:
    """The outbox of Slack messages and webhook deliveries: run the dispatcher, list, retry, discard."""


@notifications.command("run")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05, 60),
              help="Seconds to wait when nothing is due.")
@click.option("--parent", type=int, hidden=True, help="Stop when this process is gone (set by serve).")
def notifications_run(poll: float, parent: int | None) -> None:
    """Deliver the outbox until stopped (SIGTERM or Ctrl-C), and announce newly stuck records."""
    from service.bootstrap import dispatcher
    from service.supervision import beat

    wired = services(log_stream=sys.stdout)
    if wired.people is None:
        raise click.ClickException("PERSONAL_DATA_KEY is not set: messages carry personal fields sealed, and the "
                                   "dispatcher could only send them as \"sealed\" (see the README, \"Personal data\")")
    stop = stop_on_signals()
    with database_errors():
        dispatcher(wired).run(stop, poll_seconds=poll, parent_pid=parent, on_round=lambda: beat("notifications"))


@notifications.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "dead"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def notifications_list(status: str | None, limit: int) -> None:
    """Messages oldest first: id, destination, kind, record, status, attempts, last error."""
    wired = services()
    with database_errors():
        found, _ = wired.outbox.list(status=status, limit=limit)
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
    wired = services()
    with database_errors():
        count = wired.outbox.retry(message_id=message_id)
    if message_id is not None and count == 0:
        raise click.ClickException(f"no dead message {message_id}")
    click.echo(f"{count} messages queued again")


@notifications.command("discard")
@click.argument("message_id", type=int)
def notifications_discard(message_id: int) -> None:
    """Delete a dead message for good (it will not be sent); pending and sent ones are refused."""
    wired = services()
    with database_errors():
        discarded = wired.outbox.discard(message_id)
        if discarded is None:
            found = wired.outbox.get(message_id)
            raise click.ClickException(f"message {message_id} is {found.status}; only dead ones are discarded"
                                       if found else f"no message {message_id}")
    click.echo(f"message {message_id} discarded ({discarded.destination} {discarded.kind})")
