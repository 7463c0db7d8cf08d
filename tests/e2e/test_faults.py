"""The fault suite (bench/faults.py), shortened: workers killed, PostgreSQL (a cluster of the test's
own) restarted fast and immediate under load, the helpers killed, slow clients at the proxy;
then every acknowledged write is accounted for by event id."""
from __future__ import annotations

import pytest

from bench.proxy import nginx_binary


def test_under_faults_no_acknowledged_write_is_lost_doubled_or_moved_and_everything_recovers():
    if nginx_binary() is None:
        pytest.fail("nginx is not installed (apt-get install nginx)", pytrace=False)
    from bench.faults import run

    figures = run(seconds=20, writers=8)
    assert figures["acknowledged"] > 100, figures
    accounting = {key: figures[key] for key in ("lost", "stored_twice", "stored_elsewhere",
                                                 "retry_answered_differently", "streams_with_gaps",
                                                 "stored_unacknowledged")}
    assert accounting == dict.fromkeys(accounting, 0), figures
    assert figures["valid_writes_refused"] == [], figures
    # never a 500; "no answer" only where a worker killed with SIGKILL cut its answer short
    assert set(figures["statuses"]) <= {"200", "201", "503", "no answer"}, figures
    assert figures["statuses"].get("no answer", 0) <= 2, figures
    assert figures["helper_restarts"]["projections"] >= 1 and figures["helper_restarts"]["notifications"] >= 1
    assert figures["health_at_end"] == "ok" and figures["projection_lag_at_end"] == 0, figures
    assert figures["projections_match_a_rebuild"], figures["verify_output"]
