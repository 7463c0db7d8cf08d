"""The production server: gunicorn running ``create_app()`` in each worker."""
from __future__ import annotations

import json
import os
from typing import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker as ThreadWorkerBase
from gunicorn.workers.sync import SyncWorker as SyncWorkerBase

from service.config import Settings
from service.logs import stdlib_logging_config


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict, load: Callable):
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._load()


class _ProblemAnswers:
    """gunicorn's answers to requests it refuses before the app sees them, as problem+json."""

    def handle_error(self, req, client, addr, exc):
        from gunicorn.http import errors

        from service.api.problems import PROBLEM_JSON, Problem

        if isinstance(exc, errors.LimitRequestLine):
            problem = Problem("uri_too_long", f"the request line is longer than {self.cfg.limit_request_line} bytes")
        elif isinstance(exc, errors.LimitRequestHeaders):
            problem = Problem("headers_too_large", f"a request header is longer than "
                              f"{self.cfg.limit_request_field_size} bytes, or there are more than "
                              f"{self.cfg.limit_request_fields}")
        elif isinstance(exc, (errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion,
                              errors.InvalidHeader, errors.InvalidHeaderName, errors.ObsoleteFolding,
                              errors.InvalidChunkSize, errors.ChunkMissingTerminator)):
            problem = Problem("bad_request", "the request is not well-formed HTTP/1.1")
        else:
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Refused request from ip=%s: %s", (addr or ("",))[0], problem.code)
        body = json.dumps(problem.document()).encode() + b"\n"
        head = (f"HTTP/1.1 {problem.status} {problem.title}\r\nConnection: close\r\n"
                f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n"
                "X-Content-Type-Options: nosniff\r\n\r\n").encode("latin-1")
        try:
            client.sendall(head + body)
        except OSError:
            pass


class SyncWorker(_ProblemAnswers, SyncWorkerBase):
    pass


class ThreadWorker(_ProblemAnswers, ThreadWorkerBase):
    pass


def app():
    """WSGI entry for other servers: ``gunicorn 'service.wsgi:app()'``."""
    from service import create_app

    return create_app()


def _worker_gone(server, worker) -> None:
    """gunicorn's child_exit hook: let prometheus_client drop a dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(host: str, port: int, workers: int, threads: int = 1, timeout: int = 30, load: Callable = app) -> None:
    """Run gunicorn in the foreground; each worker calls ``load`` and so builds its own app and pool."""
    settings = Settings.from_env()
    hooks = {"child_exit": _worker_gone} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {}
    _Gunicorn({
        **hooks,
        "logconfig_dict": stdlib_logging_config(settings.log_format, settings.log_level),
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "service.wsgi.ThreadWorker" if threads > 1 else "service.wsgi.SyncWorker",
        "control_socket_disable": True,  # nothing here uses gunicorn's control socket
        "accesslog": None,  # the app logs one structured line per request
        "timeout": timeout,
        "graceful_timeout": 10,
        "keepalive": 5,
    }, load).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m service.wsgi``: gunicorn alone, as ``casestudies serve`` starts (and restarts) it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m service.wsgi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers, args.threads, args.timeout)


if __name__ == "__main__":
    main()
