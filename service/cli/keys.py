"""``casestudies keys``: API keys, created once and shown once."""
from __future__ import annotations

import click

from service.access.keys import KeyRequestError, KeyStore
from service.access.roles import ROLES
from service.cli.common import database_errors, settings


@click.group()
def keys() -> None:
    """API keys."""


def _key_store() -> KeyStore:
    from service.events.backends import make_engine

    with database_errors():
        return KeyStore(make_engine(settings().database_url))


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who or what uses the key; it becomes the events' actor.")
def keys_create(role: str, name: str) -> None:
    """Create a key and print it once; only its hash is stored."""
    try:
        with database_errors():
            key = _key_store().create(name, role)
    except KeyRequestError as error:
        raise click.ClickException(str(error)) from None
    click.echo(key)
    click.echo(f"created {role} key {name!r}; store it now, it cannot be shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """List keys (names, roles, prefixes; never the keys)."""
    with database_errors():
        infos = _key_store().list()
    for info in infos:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        click.echo(f"{info.name}\t{info.role}\t{info.prefix}…\t{info.created_at:%Y-%m-%d %H:%M}\t{state}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the key called NAME; it stops working at once."""
    try:
        with database_errors():
            _key_store().revoke(name)
    except KeyRequestError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"revoked {name!r}")
