"""``casestudies serve``: the API under gunicorn, with the projections worker and the dispatcher beside it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import click

from service.cli.common import settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), envvar="PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (more than 1 uses gunicorn's gthread worker).")
@click.option("--projectors/--no-projectors", default=True, show_default=True,
              help="Also run `casestudies projections run` beside the server (turn off where a separate "
                   "worker keeps the projections, as in docker-compose.yml).")
@click.option("--notifications/--no-notifications", default=True, show_default=True,
              help="Also run `casestudies notifications run` beside the server (turn off where a separate "
                   "dispatcher delivers the outbox, as in docker-compose.yml).")
def serve(host: str, port: int, workers: int, threads: int, projectors: bool, notifications: bool) -> None:
    """Serve the API with gunicorn."""
    settings()
    # Each gunicorn worker is a process: its metrics go to files here, summed by whichever
    # worker answers a scrape. Set before anything imports prometheus_client.
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="casestudies-metrics-")
    from service.wsgi import serve as run

    beside = [group for group, wanted in (("projections", projectors), ("notifications", notifications)) if wanted]
    helpers = [subprocess.Popen([sys.executable, "-m", "service.cli", group, "run", "--parent", str(os.getpid())])
               for group in beside]
    try:
        run(host=host, port=port, workers=workers, threads=threads)
    finally:
        for helper in helpers:
            helper.terminate()
        for helper in helpers:
            try:
                helper.wait(10)
            except subprocess.TimeoutExpired:
                helper.kill()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
