"""``casestudies db``: the database schema."""
from __future__ import annotations

import click

from service.cli.common import database_errors, settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
def upgrade() -> None:
    """Migrate the database at DATABASE_URL to the newest schema."""
    from service import migrations
    from service.events.backends import make_engine

    chosen = settings()
    with database_errors():
        engine = make_engine(chosen.database_url)
        migrations.upgrade(engine)
        click.echo(f"database at revision {migrations.current_revision(engine)}")
        engine.dispose()
