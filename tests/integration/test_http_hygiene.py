"""What every client meets whatever it asks: security headers, no redirect built from the Host
header, a ceiling on costly reads per key, a statement timeout, cached open readings."""
from __future__ import annotations

import fcntl
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from service.api.limits import _folder, slot_tag
from service.events.backends import make_engine
from tests.conftest import auth, problem


def test_every_answer_says_nosniff_and_authenticated_ones_are_not_cached(client, keys):
    open_answer = client.get("/healthz")
    assert open_answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in open_answer.headers.get("Cache-Control", "")
    for path in ("/case-studies", "/projections/pipeline"):
        answer = client.get(path, headers=auth(keys["reader"]))
        assert answer.status_code == 200
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store"
    refused = client.get("/case-studies", headers=auth("csk_not-a-key"))
    assert refused.headers["Cache-Control"] == "no-store" and refused.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs/", "/reports/weekly?format=html"])
def test_html_pages_forbid_framing_and_run_only_their_own_scripts(client, keys, path):
    answer = client.get(path, headers=auth(keys["reader"]))
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    policy = answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert answer.headers["X-Frame-Options"] == "DENY"


def test_docs_redirects_to_a_relative_address_whatever_the_host_header_says(client):
    answer = client.get("/docs", headers={"Host": "attacker.example"})
    assert answer.status_code == 308 and answer.headers["Location"] == "/docs/"


def _slot(database_url: str, key_name: str, slot: int):
    """Hold one of a key's costly-read slots, as another worker serving that key would."""
    handle = open(_folder() / f"{slot_tag(database_url, key_name)}.{slot}", "a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_key_with_a_costly_read_running_elsewhere_gets_429_with_retry_after_and_others_do_not(client, keys, services):
    name = services.keys.authenticate(keys["reader"]).name
    held = _slot(services.settings.database_url, name, 0)  # another worker is serving this key's report
    try:
        refused = client.get("/reports/weekly", headers=auth(keys["reader"]))
        body = problem(refused, 429, "too_many_requests")
        assert refused.headers["Retry-After"] == "1" and body["limit"] == 1
        assert client.get("/projections/stuck", headers=auth(keys["reader"])).status_code == 429
        # other keys, cheap reads and health are not held up
        assert client.get("/reports/weekly", headers=auth(keys["auditor"])).status_code == 200
        assert client.get("/case-studies", headers=auth(keys["reader"])).status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        held.close()
    assert client.get("/reports/weekly", headers=auth(keys["reader"])).status_code == 200
    # a streamed CSV keeps its slot until written, then frees it
    streamed = client.get("/projections/stuck?format=csv", headers=auth(keys["reader"]))
    assert streamed.status_code == 200
    streamed.close()
    assert client.get("/projections/stuck", headers=auth(keys["reader"])).status_code == 200


def test_the_slots_live_in_the_server_s_run_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_DIR", str(tmp_path))
    assert _folder() == tmp_path / "costly-reads" and _folder().is_dir()
    monkeypatch.delenv("HELPERS_DIR")
    assert _folder() == Path(tempfile.gettempdir()) / "costly-reads"


def test_a_statement_past_the_timeout_is_cancelled_on_postgresql(postgres_database):
    own = "?options=-c%20search_path%3Dpg_catalog,public&connect_timeout=7"  # an operator's own settings stay
    engine = make_engine(postgres_database.url + own, statement_timeout=0.05)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "50ms"
            assert conn.execute(text("SHOW search_path")).scalar_one() == "pg_catalog,public"
            assert conn.connection.driver_connection.info.get_parameters()["connect_timeout"] == "7"
            with pytest.raises(Exception) as raised:
                conn.execute(text("SELECT pg_sleep(1)"))
        from service.api.errors import to_problem
        assert to_problem(raised.value).status == 503
    finally:
        engine.dispose()
    unbounded = make_engine(postgres_database.url)  # helpers and commands: no timeout
    try:
        with unbounded.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "0"
    finally:
        unbounded.dispose()


def test_open_readings_are_read_from_the_database_at_most_every_few_seconds(client, services):
    readings = client.application.extensions["casestudies_readings"]
    now = [1000.0]
    readings.clock = lambda: now[0]
    readings.forget()
    calls = []
    real = services.outbox.depth

    def counted():
        calls.append(1)
        return real()

    services.outbox.depth = counted
    try:
        for _ in range(5):
            assert client.get("/metrics").status_code == 200
            assert client.get("/healthz/details").status_code == 200
        assert len(calls) == 1
        now[0] += 5.1
        client.get("/metrics")
        assert len(calls) == 2
    finally:
        del services.outbox.depth
        readings.clock = time.monotonic
        readings.forget()
