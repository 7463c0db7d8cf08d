"""Fixtures and helpers of the end-to-end tests: the service as `casestudies serve` runs it, reached
over HTTP on loopback and through the `casestudies` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from bench.common import free_port

BIN = Path(sys.executable).parent


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", **(env or {})}
    return subprocess.run([str(BIN / "casestudies"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def call(base: str, method: str, path: str, key: str | None = None, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **({"Content-Type": "application/json"} if data else {}),
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


class Served(NamedTuple):
    url: str  # the database's
    base: str  # the server's
    log_path: Path
    process: subprocess.Popen  # `casestudies serve`: gunicorn's arbiter and the helpers' supervisor


@contextmanager
def serving(url: str, folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`casestudies serve --workers 2 *args` on ``url`` (migrated), on a free port, until it answers ready."""
    port = free_port()
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(BIN / "casestudies"), "serve", "--port", str(port), "--workers", "2", *args],
                                  env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json",
                                       "KEY_CACHE_SECONDS": "1", **(env or {})},
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if call(base, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield Served(url, base, log_path, server)
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture
def served(fresh_database, tmp_path):
    migrated = cli(fresh_database.url, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    with serving(fresh_database.url, tmp_path) as server:
        yield server


@contextmanager
def nginx_in_front(upstream: str, folder: Path, *, replace: dict[str, str] | None = None) -> Iterator[str]:
    """The deployment's proxy (bench.proxy) in front of ``upstream`` on a free port; skipped where
    nginx is not installed, failed in CI."""
    from bench.proxy import nginx_binary
    from bench.proxy import nginx_in_front as run

    if nginx_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (apt-get install nginx)", pytrace=False)
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with run(upstream, folder, free_port(), replace=replace) as base:
        yield base
