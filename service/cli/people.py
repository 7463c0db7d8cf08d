"""``casestudies people``: the master key, and erasure and access requests from the command line."""
from __future__ import annotations

import getpass
import sys

import click
import orjson

from service.cli.common import database_errors, services


@click.group()
def people() -> None:
    """Personal data of the people named in records: make the master key, erase a person, export
    what is held about them."""


@people.command("new-key")
def new_key() -> None:
    """Print a new master key for PERSONAL_DATA_KEY (keep it secret, and keep it: without it no
    personal field can be read)."""
    from service.people.keys import new_master_key

    click.echo(new_master_key())


def _person(email: str | None, name: str | None, account_id: str | None):
    from service.people.erasure import Person

    try:
        return Person.asked(email, name, account_id)
    except ValueError:
        raise click.UsageError("give --email, or --name with --account (for a person with no email)") from None


def _wired_people():
    wired = services()
    if wired.people is None:
        raise click.ClickException("PERSONAL_DATA_KEY is not set (see the README, \"Personal data\")")
    return wired.people


_WHO = [click.option("--email", help="The person's email."),
        click.option("--name", help="The person's name (a person with no email), with --account."),
        click.option("--account", "account_id", help="The account id the named person belongs to.")]


def _who(command):
    for option in reversed(_WHO):
        command = option(command)
    return command


@people.command("export")
@_who
def export(email: str | None, name: str | None, account_id: str | None) -> None:
    """Print, as JSON, every record and field that holds the person's data, decrypted (Art. 15)."""
    from service.people.erasure import PersonNotFound

    person = _person(email, name, account_id)
    keeper = _wired_people()
    with database_errors():
        try:
            found = keeper.export(person)
        except PersonNotFound:
            raise click.ClickException("no personal data is held about this person") from None
    sys.stdout.write(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() + "\n")


@people.command("erase")
@_who
@click.option("--reason", required=True, help="Why: the request's reference (e.g. \"Art. 17, ticket 4411\").")
@click.option("--actor", default=None, help="Who asks (default: this user's login name).")
def erase(email: str | None, name: str | None, account_id: str | None, reason: str, actor: str | None) -> None:
    """Erase a person (Art. 17): destroy their key, note it in every record that held their data, clean
    the outbox; print the receipt as JSON."""
    from service.people.erasure import PersonNotFound

    person = _person(email, name, account_id)
    keeper = _wired_people()
    with database_errors():
        try:
            receipt, erased = keeper.erase(person, reason=reason, actor=actor or f"cli:{getpass.getuser()}")
        except PersonNotFound:
            raise click.ClickException("no personal data is held about this person, and none was erased") from None
    if not erased:
        click.echo("erased before: this is the receipt kept then", err=True)
    sys.stdout.write(orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode() + "\n")
