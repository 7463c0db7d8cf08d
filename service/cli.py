"""The ``casestudies`` command: serve, migrate, manage API keys."""
from __future__ import annotations

import sys
from contextlib import contextmanager

import click
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from service.config import Settings, SettingsError
from service.events.db import make_engine
from service.events.keys import ROLES, KeyRequestError, KeyStore


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
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API with gunicorn."""
    from service.wsgi import serve as run

    _settings()
    run(host=host, port=port, workers=workers, threads=threads)


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


if __name__ == "__main__":
    sys.exit(main())
