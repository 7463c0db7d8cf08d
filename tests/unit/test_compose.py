"""docker-compose.yml wires PostgreSQL, a one-shot migration, the API, the projections worker and the
notifications dispatcher: read as the YAML it is, each service's command is a real `casestudies`
command and each variable one the settings read."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main as cli
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_postgresql_keeps_its_data_and_says_when_it_is_ready(compose):
    db = compose["services"]["db"]
    assert db["image"].startswith("postgres:")
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"] and "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_the_migration_runs_once_the_database_is_healthy_and_everything_else_after_it(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["casestudies", "db", "upgrade"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("api", "projections", "notifications"):
        assert services[name]["depends_on"] == {"db": {"condition": "service_healthy"},
                                                "migrate": {"condition": "service_completed_successfully"}}


def test_the_api_leaves_projections_and_notifications_to_their_own_services(compose):
    services = compose["services"]
    assert services["api"]["command"][:2] == ["casestudies", "serve"]
    assert {"--no-projectors", "--no-notifications"} <= set(services["api"]["command"])
    assert services["projections"]["command"] == ["casestudies", "projections", "run"]
    assert services["notifications"]["command"] == ["casestudies", "notifications", "run"]


@pytest.mark.parametrize("service", ["migrate", "api", "projections", "notifications"])
def test_every_command_is_one_the_cli_has(compose, service):
    command = compose["services"][service]["command"]
    words = [word for word in command[1:] if not word.startswith("-") and "$" not in word and "." not in word]
    path = words[:2] if words[0] != "serve" else words[:1]
    assert CliRunner().invoke(cli, [*path, "--help"]).exit_code == 0, path


def test_every_service_reads_postgresql_with_variables_the_settings_know(compose):
    shared = compose["x-service-env"]
    assert shared["DATABASE_URL"].startswith("postgresql+psycopg://") and "@db:5432/" in shared["DATABASE_URL"]
    known = {name.upper() for name in Settings.model_fields}
    assert set(shared) <= known, set(shared) - known
    for name in ("migrate", "api", "projections", "notifications"):
        assert compose["services"][name]["environment"] == shared
