"""The migrations are the only DDL; they must build exactly the tables the code uses."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service import migrations
from service.migrations import metadata as code_metadata


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_migrating_an_empty_database_builds_the_tables_the_code_expects(fresh_database):
    engine = fresh_database.engine
    assert migrations.current_revision(engine) is None
    migrations.upgrade(engine)
    assert migrations.current_revision(engine) == migrations.head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), code_metadata())
    assert diff == []
    migrations.upgrade(engine)  # running it again is harmless
    assert migrations.current_revision(engine) == migrations.head_revision()
