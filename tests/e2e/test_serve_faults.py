"""`casestudies serve` under the faults a server meets: a worker that leaves however it leaves (SIGTERM,
SIGKILL, the abort of a timeout, a real timeout), helpers killed; the server, its helpers and
/metrics carry on, and health tells the truth."""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from bench.common import children
from tests.e2e.conftest import call, cli, serving
from tests.factories import COMMITTED


def helpers(server) -> dict[str, int]:
    """serve's children: gunicorn's arbiter ("api") and the helpers."""
    return {group: pid for pid, command in children(server.pid).items()
            for group, mark in (("api", "service.wsgi"), ("projections", "service.cli projections run"),
                                ("notifications", "service.cli notifications run")) if mark in command}


def workers(server) -> set[int]:
    arbiter = helpers(server).get("api")
    return set(children(arbiter)) if arbiter else set()


def wait_for(condition, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def write_works(base: str, key: str) -> None:
    stream = f"cs-{uuid.uuid4().hex[:12]}"
    status, _, body = call(base, "POST", f"/case-studies/{stream}/events", key,
                           {"type": "committed", "data": COMMITTED})
    assert status == 201, body


@pytest.fixture
def server(fresh_database, tmp_path):
    assert cli(fresh_database.url, "db", "upgrade").returncode == 0
    key = cli(fresh_database.url, "keys", "create", "--role", "admin", "--name", "ops").stdout.strip()
    with serving(fresh_database.url, tmp_path, "--timeout", "3") as served:
        wait_for(lambda: len(workers(served.process)) == 2 and len(helpers(served.process)) == 3,
                 what="gunicorn with two workers, and two helpers")
        yield served, key


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_a_worker_that_leaves_however_it_leaves_costs_the_server_nothing(server):
    served, key = server
    process, base = served.process, served.base
    helpers_before = helpers(process)
    # SIGABRT is what gunicorn sends a worker past its timeout; SIGSTOP makes a real timeout
    # (the arbiter hears nothing from the worker for 3 s, aborts and then kills it).
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGABRT, signal.SIGSTOP):
        before = workers(process)
        victim = min(before)
        os.kill(victim, sig)
        wait_for(lambda: victim not in workers(process) and len(workers(process)) == 2, timeout=30,
                 what=f"a new worker after {sig.name}")
        assert process.poll() is None, served.log_path.read_text()[-3000:]
        assert call(base, "GET", "/readyz")[0] == 200
        write_works(base, key)
    assert helpers(process) == helpers_before  # nobody stopped them
    assert "casestudies_http_requests_total" in call_text(base, "/metrics")
    details = call(base, "GET", "/healthz/details")[2]
    assert {name: h["restarts"] for name, h in details["helpers"].items()} == \
        {"api": 0, "projections": 0, "notifications": 0}


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_gunicorn_itself_killed_is_started_again(server):
    served, key = server
    arbiter = helpers(served.process)["api"]
    os.kill(arbiter, signal.SIGKILL)
    wait_for(lambda: helpers(served.process).get("api") not in (None, arbiter) and len(workers(served.process)) == 2,
             what="gunicorn started again")
    wait_for(lambda: _answers(served.base), what="the API to answer again")
    write_works(served.base, key)
    assert call(served.base, "GET", "/healthz/details")[2]["helpers"]["api"]["restarts"] == 1


def _answers(base: str) -> bool:
    try:
        return call(base, "GET", "/readyz")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_helpers_killed_are_restarted_and_health_says_so(server):
    served, key = server
    process, base = served.process, served.base
    wait_for(lambda: call(base, "GET", "/healthz/details")[2]["helpers"]["projections"]["last_progress_at"],
             what="the projections helper's first round")
    details = call(base, "GET", "/healthz/details")[2]
    assert details["status"] == "ok", details
    first = helpers(process)
    os.kill(first["projections"], signal.SIGKILL)
    os.kill(first["notifications"], signal.SIGTERM)
    # while they are down (the first back-off is a second), health says so
    down = wait_for(lambda: (d := call(base, "GET", "/healthz/details")[2])["status"] == "degraded" and d,
                    timeout=5, what="health to report the helpers down")
    assert any("projections is not running" in reason for reason in down["reasons"]), down
    assert call(base, "GET", "/readyz")[0] == 200  # the load balancer's question is the database's
    again = wait_for(lambda: (h := helpers(process)).keys() == first.keys() and h, what="both helpers started again")
    assert again["api"] == first["api"] and again["projections"] != first["projections"] and \
        again["notifications"] != first["notifications"]
    wait_for(lambda: call(base, "GET", "/healthz/details")[2]["status"] == "ok", what="health back to ok")
    details = call(base, "GET", "/healthz/details")[2]
    assert details["helpers"]["projections"]["restarts"] == 1
    assert details["helpers"]["projections"]["last_exit_code"] == -signal.SIGKILL
    assert details["helpers"]["notifications"]["restarts"] == 1
    # the new projections helper does its work
    write_works(base, key)
    wait_for(lambda: call(base, "GET", "/healthz/details")[2]["helpers"]["projections"]["lag_events"] == 0,
             what="the projections to catch up")
    metrics = call_text(base, "/metrics")
    assert 'casestudies_helper_restarts_total{helper="projections"} 1.0' in metrics
    assert 'casestudies_helper_up{helper="notifications"} 1.0' in metrics
    log = served.log_path.read_text()
    assert '"event":"helper_exited"' in log and '"event":"helper_started"' in log


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_stopping_the_server_stops_its_helpers_and_removes_its_folder(server):
    served, _ = server
    process = served.process
    started = helpers(process)
    environ = dict(item.split("=", 1) for item in  # what serve gave its helpers
                   Path(f"/proc/{started['projections']}/environ").read_bytes().decode().split("\0") if "=" in item)
    run_dir = Path(environ["HELPERS_DIR"])
    assert run_dir.is_dir()
    process.terminate()
    assert process.wait(timeout=20) == 0
    assert set(started) == {"api", "projections", "notifications"}
    for pid in started.values():
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                 what=f"helper {pid} to stop")
    assert not run_dir.exists()


def call_text(base: str, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + path, timeout=10) as response:
        return response.read().decode()


def _raw(base: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_requests_the_server_refuses_before_the_app_are_answered_as_problem_json(served):
    import json

    cases = [
        (b"GET /case-studies?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
         431, "headers_too_large"),
        (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ]
    for request, status, code in cases:
        got, headers, body = _raw(served.base, request)
        assert got == status, body
        assert headers["Content-Type"] == "application/problem+json"
        document = json.loads(body)
        assert document["code"] == code and document["status"] == status and document["title"]
    assert call(served.base, "GET", "/healthz")[0] == 200
    key = cli(served.url, "keys", "create", "--role", "admin", "--name", "ops").stdout.strip()
    chunked = (b"POST /webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
               + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    got, headers, body = _raw(served.base, chunked)  # the framing fails while the app reads the body
    assert (got, headers["Content-Type"], json.loads(body)["code"]) == (400, "application/problem+json", "bad_request")
