"""The database going away, seen from a client: every endpoint answers 503 problem+json with
Retry-After (never 500), and a restart nobody saw costs no request anything.

PostgreSQL is reached through a real TCP proxy on loopback that the test cuts (connections reset,
new ones refused) and restores; the shared server itself is never touched.
"""
from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url

from service import create_app
from service.access.keys import ROLES
from service.api.errors import to_problem
from service.bootstrap import build
from service.config import Settings
from service.events.backends import make_engine
from tests.conftest import PERSONAL_DATA_KEY, auth, new_database, problem, unique_id
from tests.factories import COMMITTED, VALID_DATA
from tests.integration.test_deals import DEAL
from tests.tcpproxy import TcpProxy

# These answer whatever the database does: no database behind them, or they report its absence.
NO_DATABASE = {"/healthz", "/metrics", "/healthz/details", "/docs", "/openapi.json", "/machine", "/docs/", "/docs/<path:path>", "/static/<path:filename>"}


@pytest.fixture
def behind_proxy(request, tmp_path):
    """(client, keys, proxy, stream id): an app whose PostgreSQL connections go through a proxy."""
    with new_database(request, "postgres", tmp_path) as db, TcpProxy(make_url(db.url).port or 5432) as proxy:
        url = make_url(db.url).set(port=proxy.port).render_as_string(hide_password=False)
        engine = make_engine(url)
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=url, log_format="json", key_cache_seconds=600,
                                  webhook_cache_seconds=0), engine=engine)
        client = create_app(services=services).test_client()
        keys = {role: services.keys.create(f"{role}-{uuid.uuid4().hex[:6]}", role) for role in ROLES}
        for key in keys.values():  # authenticated once, so the keys are known while the database is away
            assert client.get("/healthz", headers=auth(key)).status_code == 200
            client.get("/case-studies?limit=1", headers=auth(key))
        stream = unique_id()
        created = client.post(f"/case-studies/{stream}/events", headers=auth(keys["writer"]),
                              json={"type": "committed", "data": COMMITTED})
        assert created.status_code == 201, created.get_json()
        try:
            yield client, keys, proxy, stream
        finally:
            engine.dispose()


def _requests(stream: str) -> list[tuple[str, str, str, dict | None]]:
    """(method, path, role, body) for every route, with arguments that are valid when the database is up."""
    return [
        ("POST", f"/case-studies/{stream}/events", "writer", {"type": "started", "data": {}}),
        ("GET", f"/case-studies/{stream}", "reader", None),
        ("GET", f"/case-studies/{stream}/events", "auditor", None),
        ("GET", "/case-studies", "reader", None),
        ("GET", "/projections/pipeline", "reader", None),
        ("GET", "/projections/blockers", "reader", None),
        ("GET", "/projections/cycle-times", "reader", None),
        ("GET", "/projections/candidates", "reader", None),
        ("GET", "/projections/status", "reader", None),
        ("GET", "/projections/stuck", "reader", None),
        ("GET", "/projections/stuck?as_of=2026-01-01T00:00:00Z", "reader", None),
        ("GET", f"/case-studies/{stream}/approvals", "auditor", None),
        ("GET", f"/case-studies/{stream}/verify", "auditor", None),
        ("GET", "/audit/approvals", "auditor", None),
        ("GET", "/events", "reader", None),
        ("GET", "/reports/weekly", "reader", None),
        ("POST", "/integrations/deals", "writer", {**DEAL, "deal_id": unique_id("d")}),
        ("GET", "/webhooks", "admin", None),
        ("POST", "/webhooks", "admin", {"url": "https://93.184.215.14/x", "types": ["published"]}),
        ("GET", "/webhooks/1", "admin", None),
        ("DELETE", "/webhooks/1", "admin", None),
        ("GET", "/notifications", "admin", None),
        ("GET", "/notifications/1", "admin", None),
        ("POST", "/notifications/1/retry", "admin", None),
        ("DELETE", "/notifications/1", "admin", None),
        ("GET", "/people?email=jo@customer.example", "auditor", None),
        ("POST", "/people/erasure", "admin", {"email": "jo@customer.example", "reason": "Art. 17"}),
        ("GET", "/people/erasures/1", "auditor", None),
    ]


def test_the_list_of_requests_covers_every_route_that_reads_the_database(behind_proxy):
    client, *_ = behind_proxy
    routes = {rule.rule for rule in client.application.url_map.iter_rules()
              if not rule.rule.startswith("/ui/")} - NO_DATABASE - {"/readyz"}  # pages: the test below
    covered = {path.split("?")[0].replace("cs-", "<stream_id>") for _, path, _, _ in _requests("cs-")}
    covered = {path.replace("/1", "/<int:subscription_id>") if path.startswith("/webhooks") else
               path.replace("/1", "/<erasure_id>") if path.startswith("/people") else
               path.replace("/1", "/<int:message_id>") for path in covered}
    assert routes <= covered


@pytest.mark.parametrize("cut", ["refused and reset", "reset only"])
def test_every_endpoint_answers_503_with_retry_after_while_the_database_is_away(behind_proxy, cut):
    client, keys, proxy, stream = behind_proxy
    proxy.cut()
    if cut == "reset only":
        proxy.restore()  # the pool's connections are dead, new ones would work
    answers = {}
    for method, path, role, body in _requests(stream):
        answer = client.open(path, method=method, headers=auth(keys[role]), json=body)
        answers[method, path] = answer
    if cut == "reset only":
        # pre-ping finds the dead connections before use: nothing fails at all
        assert {key: a.status_code for key, a in answers.items() if a.status_code >= 500} == {}
        return
    wrong = {key: (a.status_code, a.get_data(as_text=True)[:200]) for key, a in answers.items()
             if a.status_code != 503 or not a.headers.get("Retry-After", "").isdigit()}
    assert wrong == {}
    for answer in answers.values():
        problem(answer, 503, "database_unavailable")
    assert problem(client.get("/readyz"), 503, "not_ready")
    metrics = client.get("/metrics")  # the process's own metrics still, and the database's absence
    assert metrics.status_code == 200 and "casestudies_metrics_database_up 0.0" in metrics.get_data(as_text=True)
    details = client.get("/healthz/details").get_json()
    assert details["status"] == "degraded" and details["database"] == {"up": False}
    assert client.get("/healthz").status_code == 200
    proxy.restore()
    again = client.post(f"/case-studies/{stream}/events", headers=auth(keys["writer"]),
                        json={"type": "started", "data": {}})
    assert again.status_code == 201, again.get_json()


def test_a_restart_while_idle_costs_the_next_requests_nothing(behind_proxy):
    client, keys, proxy, stream = behind_proxy
    for _ in range(3):  # several pooled connections, all of them then dropped by the "restart"
        assert client.get(f"/case-studies/{stream}", headers=auth(keys["reader"])).status_code == 200
    assert proxy.connections >= 1
    proxy.cut()
    proxy.restore()
    write = client.post(f"/case-studies/{stream}/events", headers=auth(keys["writer"]),
                        json={"type": "quote_added", "data": VALID_DATA["quote_added"]})
    assert write.status_code == 201, write.get_json()
    assert client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).status_code == 200


def _real_errors(db) -> list[BaseException]:
    """Errors a live PostgreSQL raises: a statement timeout, an administrator's termination."""
    found = []
    engine = make_engine(db.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET statement_timeout = 10"))
            try:
                conn.execute(text("SELECT pg_sleep(1)"))
            except exc.DBAPIError as error:
                found.append(error)
        with engine.connect() as conn, engine.connect() as other:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            try:
                conn.execute(text("SELECT 1"))
            except exc.DBAPIError as error:
                found.append(error)
    finally:
        engine.dispose()
    return found


def test_each_way_of_being_unavailable_is_a_503_with_retry_after(request, tmp_path):
    with new_database(request, "postgres", tmp_path) as db:
        real = _real_errors(db)
    assert [type(e.orig).__name__ for e in real] == ["QueryCanceled", "AdminShutdown"]
    errors = [
        *real,
        psycopg.OperationalError("connection failed: Connection refused"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        psycopg.errors.TooManyConnections("sorry, too many clients already"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.InterfaceError("the connection is closed"),
        sqlite3.OperationalError("database is locked"),
        exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
        exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        exc.InterfaceError("SELECT 1", {}, psycopg.InterfaceError("the connection is closed")),
    ]
    for error in errors:
        answer = to_problem(error)
        assert (answer.status, answer.code, answer.headers.get("Retry-After")) == (503, "database_unavailable", "2"), error
    # what is not the database's absence stays what it is
    assert to_problem(exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))).status == 500


DASHBOARD = ["/ui/board", "/ui/records", "/ui/stuck", "/ui/blockers", "/ui/weekly", "/ui/cycle-times",
             "/ui/life-cycle", "/ui/operations", "/ui/records/{stream}", "/ui/board.csv", "/ui/stuck.csv",
             "/ui/blockers.csv", "/ui/cycle-times.csv", "/ui/candidates.csv"]


def test_every_dashboard_page_is_a_503_page_with_retry_after_while_the_database_is_away(behind_proxy):
    client, keys, proxy, stream = behind_proxy
    page = client.get("/ui/sign-in").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert client.post("/ui/sign-in", data={"key": keys["admin"], "csrf_token": token}).status_code == 302
    pages = {rule.rule for rule in client.application.url_map.iter_rules() if rule.rule.startswith("/ui/")}
    assert {path.replace("{stream}", "<stream_id>") for path in DASHBOARD} == pages - {
        "/ui/", "/ui/sign-in", "/ui/sign-out", "/ui/static/<path:filename>", "/ui/records/new",
        "/ui/records/<stream_id>/events", "/ui/operations/notifications/<int:message_id>/retry",
        "/ui/operations/notifications/<int:message_id>/discard"}
    proxy.cut()
    wrong = {}
    for path in DASHBOARD:
        answer = client.get(path.format(stream=stream))
        if answer.status_code != 503 or answer.mimetype != "text/html" or answer.headers.get("Retry-After") != "2":
            wrong[path] = (answer.status_code, answer.get_data(as_text=True)[:200])
    assert wrong == {}
