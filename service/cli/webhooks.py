"""``casestudies webhooks``: outgoing webhook subscriptions."""
from __future__ import annotations

import click

from service.cli.common import database_errors, services


@click.group()
def webhooks() -> None:
    """Outgoing webhooks: CloudEvents for other tools, signed with a shared secret."""


@webhooks.command("add")
@click.argument("url")
@click.option("--types", required=True, help="Event types, comma-separated (committed,published), or * for all.")
@click.option("--secret", help="Shared secret that signs each delivery (16-200 characters); made up if not given.")
def webhooks_add(url: str, types: str, secret: str | None) -> None:
    """Subscribe URL to events of the given types."""
    from service.notifications.subscriptions import SubscriptionError

    wired = services()
    try:
        with database_errors():
            subscription, secret_used = wired.subscriptions.add(url, types.split(","), secret)
    except SubscriptionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"webhook {subscription.id}: {subscription.url} for {', '.join(subscription.types)}")
    if secret is None:
        click.echo(f"secret (shown once): {secret_used}")


@webhooks.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Also removed subscriptions.")
def webhooks_list(include_removed: bool) -> None:
    """Subscriptions: id, URL, types, the secret's fingerprint, created (and removed)."""
    wired = services()
    with database_errors():
        found = wired.subscriptions.list(include_removed=include_removed)
    for item in found:
        removed = f"\tremoved {item.removed_at:%Y-%m-%d %H:%M}" if item.removed_at else ""
        click.echo(f"{item.id}\t{item.url}\t{','.join(item.types)}\tsecret {item.secret_fingerprint}\t"
                   f"{item.created_at:%Y-%m-%d %H:%M}{removed}")


@webhooks.command("remove")
@click.argument("subscription_id", type=int)
def webhooks_remove(subscription_id: int) -> None:
    """Stop delivering to a subscription; its undelivered messages become dead."""
    from service.notifications.subscriptions import SubscriptionError

    wired = services()
    try:
        with database_errors():
            wired.subscriptions.remove(subscription_id)
    except SubscriptionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"removed webhook {subscription_id}")
