"""Settings from the environment: defaults, checks, and secrets kept out of reprs."""
from __future__ import annotations

import pytest

from service.config import Settings, SettingsError
from service.links import Links


def test_links_default_to_where_make_run_serves():
    assert Settings.from_env({}).public_base_url == "http://127.0.0.1:8000"
    assert Settings.from_env({"PORT": "9000"}).public_base_url == "http://127.0.0.1:9000"
    assert Links(Settings.from_env({"PUBLIC_BASE_URL": "https://cs.example.com/"}).public_base_url).record("x") == \
        "https://cs.example.com/case-studies/x"


@pytest.mark.parametrize("env", [
    {"PUBLIC_BASE_URL": "cs.example.com"},
    {"SLACK_WEBHOOK_URL": "hooks.slack.com/services/T/B/X"},
    {"NOTIFY_MAX_ATTEMPTS": "0"},
    {"NOTIFY_TIMEOUT_SECONDS": "30"},  # a send could outlast the 60 s lease
    {"NOTIFY_BACKOFF_SECONDS": "soon"},
    {"NOTIFY_RETENTION_DAYS": "0"},  # a sent message would be deleted as it is sent
    {"NOTIFY_RETENTION_DAYS": "-1"},
    {"NOTIFY_RETENTION_DAYS": "inf"},  # past what a date can say
])
def test_settings_that_cannot_work_are_refused_at_start(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_the_slack_url_is_a_secret_kept_out_of_reprs():
    from service.bootstrap import build, dispatcher

    url = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"
    settings = Settings.from_env({"SLACK_WEBHOOK_URL": url, "DATABASE_URL": "sqlite://"})
    assert settings.slack_webhook_url == url and "SECRETSECRET" not in repr(settings)
    sender = dispatcher(build(settings))
    assert "SECRETSECRET" not in repr(sender.settings) and "SECRETSECRET" not in repr(sender)
    sender.client.close()


def test_each_setting_is_read_from_its_variable_and_groups_from_theirs():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://db/cs", "LOG_LEVEL": "WARNING", "DB_POOL_SIZE": "9",
                                  "CANDIDATE_KPI_IMPROVEMENT_PCT": "12.5", "STUCK_NOT_STARTED_DAYS": "3",
                                  "NOTIFY_MAX_ATTEMPTS": "4", "NOTIFY_STUCK_SCAN_SECONDS": "0",
                                  "NOTIFY_RETENTION_DAYS": "7.5"})
    assert (settings.database_url, settings.log_level, settings.db_pool_size) == ("postgresql://db/cs", "warning", 9)
    assert settings.candidate_kpi_improvement_pct == 12.5
    assert settings.stuck.not_started_days == 3 and settings.stuck.no_activity_days == 21  # the rest stay default
    assert settings.notify.max_attempts == 4 and settings.notify.stuck_scan_seconds == 0
    assert settings.notify.retention_days == 7.5 and Settings.from_env({}).notify.retention_days == 30


def test_empty_variables_count_as_unset_and_a_refusal_names_the_variable():
    assert Settings.from_env({"STUCK_NOT_STARTED_DAYS": "", "PORT": ""}) == Settings()
    with pytest.raises(SettingsError, match="STUCK_NO_ACTIVITY_DAYS: "):
        Settings.from_env({"STUCK_NO_ACTIVITY_DAYS": "three weeks"})


def test_settings_made_in_code_read_nothing_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "error")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    assert Settings().log_level == "info" and Settings().database_url == "sqlite:///var/casestudies.db"
    assert Settings.from_env().log_level == "error"


def variables() -> dict[str, object]:
    """Every environment variable the settings read, with its default."""
    from dataclasses import fields, is_dataclass

    defaults = Settings()
    found: dict[str, object] = {}
    for name in Settings.model_fields:
        value = getattr(defaults, name)
        if is_dataclass(value):
            found.update({f"{name}_{f.name}".upper(): getattr(value, f.name) for f in fields(value)})
        else:
            found[name.upper()] = value
    return found


def test_the_readme_names_every_setting_with_its_default():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for variable, default in variables().items():
        assert f"`{variable}`" in readme, variable
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{variable}` |")]
        if rows and variable != "PUBLIC_BASE_URL":  # its default is PORT's
            shown = rows[0].split("|")[2].strip().strip("`")
            assert shown == ("unset" if default in (None, ()) else f"{default:g}" if isinstance(default, float)
                             else str(default)), variable
