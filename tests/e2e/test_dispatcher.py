"""The dispatcher as operators run it: `casestudies notifications run`, killed and restarted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from service.bootstrap import build
from service.config import Settings
from service.events.event import NewEvent
from tests.conftest import PERSONAL_DATA_KEY
from tests.e2e.conftest import BIN, cli
from tests.factories import COMMITTED
from tests.receiver import Receiver


def wait_for(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_a_dispatcher_killed_between_send_and_mark_delivers_again_after_restart(fresh_database, tmp_path):
    url = fresh_database.url
    assert cli(url, "db", "upgrade").returncode == 0
    loopback = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}  # where the test's receiver listens
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "NOTIFY_LEASE_SECONDS": "2",
           "NOTIFY_TIMEOUT_SECONDS": "0.5", **loopback}
    dispatchers: list[subprocess.Popen] = []

    def kill_the_sender(_request):
        if len(receiver.received) == 1:  # the consumer has the event; the dispatcher never hears back
            os.kill(dispatchers[0].pid, signal.SIGKILL)
            dispatchers[0].wait(10)

    with Receiver(on_request=kill_the_sender) as receiver:
        assert cli(url, "webhooks", "add", receiver.url, "--types", "committed").returncode == 1  # refused by default
        added = cli(url, "webhooks", "add", receiver.url, "--types", "committed", env=loopback)
        assert added.returncode == 0, added.stderr
        assert "secret (shown once): whsec_" in added.stdout
        assert receiver.url in cli(url, "webhooks", "list").stdout
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=url))
        services.store.append("acme-1", [NewEvent("committed", COMMITTED)], actor="crm")

        def start(log_name: str) -> subprocess.Popen:
            with (tmp_path / log_name).open("w") as log:
                process = subprocess.Popen([str(BIN / "casestudies"), "notifications", "run", "--poll", "0.1"],
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
            dispatchers.append(process)
            return process

        start("first.log")
        wait_for(lambda: dispatchers[0].poll() is not None, "the first dispatcher to be killed")
        (message,) = services.outbox.list()[0]
        assert message.status == "pending" and message.attempts == 0  # sent, but never marked

        second = start("second.log")
        wait_for(lambda: len(receiver.received) == 2, "the delivery after the restart")
        first_try, second_try = (r.json() for r in receiver.received)
        assert first_try == second_try  # the same CloudEvent, same id: the consumer can tell it is a repeat
        delivered = wait_for(lambda: (m := services.outbox.get(message.id)).status == "sent" and m, "the mark")
        assert delivered.attempts == 1
        time.sleep(0.5)
        assert len(receiver.received) == 2  # once marked, never again
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        lines = [json.loads(line) for line in (tmp_path / "second.log").read_text().splitlines()
                 if line.startswith("{")]
        assert [line["id"] for line in lines if line.get("event") == "notification_sent"] == [message.id]

    listed = cli(url, "notifications", "list", "--status", "sent")
    assert f"{message.id}\twebhook:1\tevent\tacme-1\tsent\t1" in listed.stdout
    assert cli(url, "notifications", "retry", str(message.id)).returncode == 1  # only dead ones
    assert cli(url, "webhooks", "remove", "1").returncode == 0
    assert cli(url, "webhooks", "list").stdout == ""
    services.engine.dispose()
