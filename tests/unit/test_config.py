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
])
def test_settings_that_cannot_work_are_refused_at_start(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_the_slack_url_is_a_secret_kept_out_of_reprs():
    from service.bootstrap import build, dispatcher

    url = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"
    settings = Settings.from_env({"SLACK_WEBHOOK_URL": url, "DATABASE_URL": "sqlite://"})
    assert settings.notify.slack_webhook_url == url and "SECRETSECRET" not in repr(settings)
    sender = dispatcher(build(settings))
    assert "SECRETSECRET" not in repr(sender.settings)
    sender.client.close()
