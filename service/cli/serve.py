"""``casestudies serve``: the API under gunicorn, with the projections worker and the dispatcher beside it,
all three supervised."""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile

import click
import structlog

from service.cli.common import settings, stop_on_signals


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), envvar="PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (more than 1 uses gunicorn's gthread worker).")
@click.option("--timeout", default=30, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds a worker may spend on one request before gunicorn replaces it (the request "
                   "is lost; the server and its other requests carry on).")
@click.option("--projectors/--no-projectors", default=True, show_default=True,
              help="Also run `casestudies projections run` beside the server (turn off where a separate "
                   "worker keeps the projections, as in docker-compose.yml).")
@click.option("--notifications/--no-notifications", default=True, show_default=True,
              help="Also run `casestudies notifications run` beside the server (turn off where a separate "
                   "dispatcher delivers the outbox, as in docker-compose.yml).")
def serve(host: str, port: int, workers: int, threads: int, timeout: int, projectors: bool,
          notifications: bool) -> None:
    """Serve the API with gunicorn, and keep it and the helpers beside it running."""
    chosen = settings()
    if chosen.personal_data_key is None:
        raise click.ClickException(
            "PERSONAL_DATA_KEY is not set: it is the master key under which the personal data in records is "
            "kept. Make one with `casestudies people new-key`, keep it safe and set it (see the README, "
            "\"Personal data\"); `make run` keeps one in var/personal-data-key")
    # One folder for this server's run: each gunicorn worker's metrics (summed by whichever worker
    # answers a scrape) and what the supervisor and helpers report. Set before anything imports
    # prometheus_client.
    run_dir = tempfile.mkdtemp(prefix="casestudies-serve-")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(run_dir, "metrics")
        os.mkdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    from service.logs import configure_logging
    from service.supervision import HELPERS_DIR, Supervisor

    os.environ[HELPERS_DIR] = run_dir
    configure_logging(chosen.log_format, chosen.log_level, stream=sys.stdout)
    if chosen.session_secret is None:
        # Every worker must sign dashboard sessions with the same secret: one for this run.
        os.environ["SESSION_SECRET"] = secrets.token_urlsafe(32)
        structlog.get_logger("casestudies.serve").warning(
            "session_secret_generated", detail="SESSION_SECRET is not set: dashboard sign-ins last until "
            "the server restarts")
    # gunicorn and each helper are this process's children, and nothing else runs here: a worker
    # that leaves (its timeout, a SIGTERM, max_requests) is gunicorn's to replace, and whichever
    # child exits is started again. Only this process sets up and tears down.
    children = {"api": [sys.executable, "-m", "service.wsgi", "--host", host, "--port", str(port),
                        "--workers", str(workers), "--threads", str(threads), "--timeout", str(timeout)]}
    for group, wanted in (("projections", projectors), ("notifications", notifications)):
        if wanted:
            children[group] = [sys.executable, "-m", "service.cli", group, "run", "--parent", str(os.getpid())]
    try:
        Supervisor(children).run(stop_on_signals())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
