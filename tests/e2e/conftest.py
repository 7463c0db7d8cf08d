"""Fixtures and helpers of the end-to-end tests: the service as `casestudies serve` runs it, reached
over HTTP on loopback and through the `casestudies` command."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
    return subprocess.run([str(BIN / "casestudies"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture
def served(fresh_database, tmp_path):
    url = fresh_database.url
    migrated = cli(url, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(BIN / "casestudies"), "serve", "--port", str(port), "--workers", "2"],
                                  env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json",
                                       "KEY_CACHE_SECONDS": "1"},
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if call(base, "GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert server.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.1)
    yield url, base, log_path
    server.terminate()
    server.wait(timeout=15)
