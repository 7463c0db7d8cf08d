"""Slow and unfinished clients against the deployment the README describes: nginx (deploy/
nginx.conf.template) in front of `casestudies serve`. While hundreds of connections dawdle over
their headers or never finish a chunked body, normal clients are answered; the dawdlers are cut
off by the header and body read timeouts; what nginx refuses is problem+json.

How fast normal clients are answered meanwhile is measured in bench/ (bench.slow_clients)."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import call, cli, nginx_in_front, serving
from tests.e2e.test_serve_faults import _raw
from tests.factories import COMMITTED

STALLED = 200


def dawdle(port: int, kind: str, stop: threading.Event, closed: list) -> None:
    """One slow client: headers a line every second, or a chunked body that never ends."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            if kind == "headers":
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            else:
                sock.sendall(b"POST /case-studies/x/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Type: application/json\r\n\r\n5\r\n{\"ty\r\n")
            sock.settimeout(1.0)
            while not stop.is_set():
                try:
                    sock.recv(4096)  # the end (nginx closes a timed-out request without an answer)
                    closed.append(kind)
                    return
                except TimeoutError:
                    if kind == "headers":
                        sock.sendall(b"X-Slow: 1\r\n")
    except OSError:
        closed.append(kind)  # the server hung up on it


@contextmanager
def proxied(database, folder: Path, replace: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """(the proxy's base URL, a writer key): `serve` on ``database`` (migrated here) behind the
    deployment's proxy, whose template lines ``replace`` changes."""
    assert cli(database.url, "db", "upgrade").returncode == 0
    key = cli(database.url, "keys", "create", "--role", "writer", "--name", "crm").stdout.strip()
    (folder / "serve").mkdir()
    (folder / "nginx").mkdir()
    with serving(database.url, folder / "serve", "--no-projectors", "--no-notifications") as served, \
            nginx_in_front(served.base.removeprefix("http://"), folder / "nginx", replace=replace) as base:
        yield base, key


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_hundreds_of_slow_clients_leave_normal_clients_answered(fresh_database, tmp_path):
    # the read timeouts shortened from 10 s so that the test sees them act
    with proxied(fresh_database, tmp_path, {"client_header_timeout 10s": "client_header_timeout 3s",
                                            "client_body_timeout 10s": "client_body_timeout 3s"}) as (base, key):
        port = int(base.rsplit(":", 1)[1])
        stop, closed = threading.Event(), []
        slow = [threading.Thread(target=dawdle, args=(port, "headers" if i % 2 else "body", stop, closed),
                                 daemon=True) for i in range(STALLED)]
        for thread in slow:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()

        def append(_):
            stream = f"cs-{uuid.uuid4().hex[:12]}"
            return call(base, "POST", f"/case-studies/{stream}/events", key,
                        {"type": "committed", "data": COMMITTED})[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(append, range(40)))
        assert statuses == [201] * 40
        assert call(base, "GET", "/healthz")[0] == 200
        assert time.monotonic() - started < 10, "normal clients waited on the slow ones"
        # the dawdlers are cut off by the read timeouts, not kept for ever
        deadline = time.monotonic() + 15
        while len(closed) < STALLED and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        assert len(closed) == STALLED


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_what_the_proxy_refuses_is_problem_json(fresh_database, tmp_path):
    with proxied(fresh_database, tmp_path) as (base, key):
        too_big = {"type": "quote_added", "data": {"text": "x" * 70_000, "speaker": "Jo"}}
        status, headers, body = call(base, "POST", "/case-studies/cs-1/events", key, too_big)
        assert (status, headers["Content-Type"], body["code"]) == (413, "application/problem+json",
                                                                   "payload_too_large")
        status, _, body = call(base, "GET", "/case-studies", "not-a-key")  # the API's own answers pass
        assert (status, body["code"]) == (401, "unauthorized")
        status, _, body = call(base, "GET", "/healthz")
        assert status == 200
        got, headers, raw = _raw(base, b"GET /?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (got, headers["Content-Type"], json.loads(raw)["code"]) == (414, "application/problem+json",
                                                                           "uri_too_long")
        got, headers, raw = _raw(base, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
        assert (got, json.loads(raw)["code"]) == (431, "headers_too_large")
    # the API gone: the proxy answers 503 with Retry-After, as problem+json
    with nginx_in_front("127.0.0.1:9", tmp_path / "nginx") as base:
        status, headers, body = call(base, "GET", "/healthz")
        assert (status, body["code"], headers["Retry-After"]) == (503, "service_unavailable", "2")


def test_the_proxy_s_problems_are_the_api_s_own():
    """Each problem the proxy answers has the status and title the API gives that code."""
    import re

    from bench.proxy import NGINX_TEMPLATE
    from service.api.problems import PROBLEMS

    bodies = re.findall(r"return (\d{3}) '(\{.*\})\\n';", NGINX_TEMPLATE.read_text())
    assert len(bodies) == 4
    for status, text in bodies:
        document = json.loads(text)
        assert PROBLEMS[document["code"]] == (int(status), document["title"]) == (document["status"], document["title"])
