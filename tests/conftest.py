"""Fixtures: every storage test runs on SQLite and on PostgreSQL through the same contract.

PostgreSQL comes from TEST_DATABASE_URL (a server URL; each test session makes a fresh
database on it and drops it afterwards). Where it cannot be reached, the PostgreSQL tests are
skipped with the reason, unless CI is set: then they fail.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from service import create_app, migrations
from service.access.keys import ROLES
from service.bootstrap import Services, build
from service.config import Settings
from service.events.backends import make_engine
from service.events.db import normalise_url

BACKENDS = ("sqlite", "postgres")

# The master key of personal data in every test, and in the servers and commands they start.
PERSONAL_DATA_KEY = os.environ.setdefault("PERSONAL_DATA_KEY", "dGVzdHMtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzISE=")


def _postgres_server() -> tuple[str | None, str]:
    """The admin URL of the test PostgreSQL server, or None and why not."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return None, "TEST_DATABASE_URL is not set"
    url = normalise_url(url)
    try:
        probe = create_engine(url, connect_args={"connect_timeout": 3})
        with probe.connect() as conn:
            conn.execute(text("select 1"))
        probe.dispose()
    except Exception as error:  # any failure to connect means "no PostgreSQL here"
        return None, f"PostgreSQL at {make_url(url).render_as_string()} cannot be reached: {error}"
    return url, ""


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url, why = _postgres_server()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but PostgreSQL is unavailable: {why}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    return url


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine


def _create_postgres(server_url: str) -> str:
    name = f"casestudies_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_postgres(server_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def new_database(request, backend: str, folder: Path, *, migrated: bool = True,
                 pool_size: int = 5) -> Iterator[Database]:
    """A database of its own on ``backend`` (an SQLite file in ``folder``, or a new PostgreSQL
    database on the test server), migrated unless asked not to, dropped afterwards."""
    if backend == "sqlite":
        url, server = f"sqlite:///{folder / 'test.db'}", None
    else:
        server = request.getfixturevalue("postgres_server")
        url = _create_postgres(server)
    engine = make_engine(url, pool_size=pool_size)
    try:
        if migrated:
            migrations.upgrade(engine)
        yield Database(backend, url, engine)
    finally:
        engine.dispose()
        if server:
            _drop_postgres(server, url)


@contextmanager
def migrated_database(request, tmp_path_factory, name: str, pool_size: int = 5) -> Iterator[Database]:
    """A new migrated database of the backend ``request`` is parametrised with (for module fixtures)."""
    with new_database(request, request.param, tmp_path_factory.mktemp(name), pool_size=pool_size) as db:
        yield db


@pytest.fixture(scope="session")
def sqlite_database(request, tmp_path_factory) -> Iterator[Database]:
    """A migrated SQLite database shared by the session (tests use unique stream ids)."""
    with new_database(request, "sqlite", tmp_path_factory.mktemp("sqlite"), pool_size=20) as db:
        yield db


@pytest.fixture(scope="session")
def postgres_database(request, tmp_path_factory) -> Iterator[Database]:
    """A migrated PostgreSQL database shared by the session (tests use unique stream ids)."""
    with new_database(request, "postgres", tmp_path_factory.mktemp("postgres"), pool_size=20) as db:
        yield db


@pytest.fixture(scope="session", params=BACKENDS)
def database(request) -> Database:
    """The session's database of each backend in turn: a test that takes it runs on both."""
    return request.getfixturevalue(f"{request.param}_database")


@pytest.fixture
def fresh_database(request, tmp_path) -> Iterator[Database]:
    """An empty, unmigrated database of the backend the test is parametrised with."""
    with new_database(request, request.param, tmp_path, migrated=False) as db:
        yield db


@pytest.fixture(scope="session")
def services(database) -> Services:
    settings = Settings(database_url=database.url, log_format="json", personal_data_key=PERSONAL_DATA_KEY)
    return build(settings, engine=database.engine)


@pytest.fixture(scope="session")
def app(services):
    return create_app(services=services)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def keys(services) -> dict[str, str]:
    """One API key per role, named after it."""
    suffix = uuid.uuid4().hex[:6]
    return {role: services.keys.create(f"{role}-{suffix}", role) for role in ROLES}


def unique_id(prefix: str = "cs") -> str:
    """A stream id no other test uses, so tests can share one database."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def settle(feed, timeout: float = 15.0) -> None:
    """Wait until the feed hands out every committed event.

    Transaction ids are server-wide: any writing transaction open on the same PostgreSQL server
    (another test database, a benchmark) briefly holds the feed back, by design."""
    import time

    from service.events.db import transaction

    deadline = time.monotonic() + timeout
    while True:
        with transaction(feed.engine, isolation="REPEATABLE READ", write=False) as conn:
            if feed.lag(conn, feed.head(conn).position).events == 0:
                return
        assert time.monotonic() < deadline, "an open transaction on the server held the feed back"
        time.sleep(0.02)


def project(services) -> None:
    """Bring the projections up to everything committed (no worker runs in these tests)."""
    settle(services.feed)
    services.runner.catch_up()


# -- the HTTP contract's helpers ---------------------------------------------------------------
def auth(key: str) -> dict[str, str]:
    """The header that presents ``key``."""
    return {"Authorization": f"Bearer {key}"}


def problem(response, status: int, code: str) -> dict:
    """The problem+json body of ``response``, after checking it is the problem expected."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code and body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body
