"""The deployment's buffering proxy (deploy/nginx.conf.template) run with Debian's nginx, for the
slow-client benchmark and the tests: rendered for an upstream, on a port, in a folder of its own."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.common import ROOT

NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf.template"


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if Path(found).exists() else None


@contextmanager
def nginx_in_front(upstream: str, folder: Path, port: int, *, replace: dict[str, str] | None = None) -> Iterator[str]:
    """nginx serving the template rendered for ``upstream`` (host:port) on ``port`` until the block
    ends; ``replace`` changes lines of the template (a test's shorter timeouts). Yields its base URL."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    site = NGINX_TEMPLATE.read_text().replace("${API_UPSTREAM}", upstream).replace("${LISTEN_PORT}", str(port))
    for old, new in (replace or {}).items():
        if old not in site:
            raise ValueError(f"{old!r} is not in the template")
        site = site.replace(old, new)
    (folder / "site.conf").write_text(site)
    temp = "".join(f"{kind}_temp_path {folder / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
        + "events { worker_connections 4096; }\n"
        + f"http {{\naccess_log off;\n{temp}include {folder / 'site.conf'};\n}}\n")
    process = subprocess.Popen([binary, "-c", str(folder / "nginx.conf"), "-p", str(folder), "-e",
                                str(folder / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {(folder / 'error.log').read_text()}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
