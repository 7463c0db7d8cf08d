"""docker-compose.yml is valid and wires PostgreSQL, a one-shot migration, the API, the projections worker
and the notifications dispatcher."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_the_compose_file_validates_and_runs_migrations_before_the_api():
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    config = done.stdout
    assert "pg_isready" in config and "pgdata" in config
    assert "service_completed_successfully" in config and "service_healthy" in config
    assert "postgresql+psycopg://" in config and "casestudies" in config
    assert "--no-projectors" in config and "projections" in config and "run" in config
    assert "--no-notifications" in config and "notifications" in config and "SLACK_WEBHOOK_URL" in config
