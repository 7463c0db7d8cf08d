"""Work done in rounds until stopped, outliving any one failure: the loop the long-running
helpers (the projections runner, the outbox dispatcher) share."""
from __future__ import annotations

import os
import threading
from typing import Callable


def keep_going(stop: threading.Event, work: Callable[[], bool], *, poll_seconds: float, max_backoff: float,
               failed: Callable[[Exception, float], None], parent_pid: int | None = None,
               on_round: Callable[[], None] | None = None) -> None:
    """Call ``work`` round after round until ``stop`` is set (or process ``parent_pid`` is gone).

    A round that did nothing (``work`` answered false) is followed by a wait of ``poll_seconds``.
    A round that raised is reported with ``failed(error, delay)`` (inside the handler, so that it may
    log the traceback) and followed by a back-off that doubles up to ``max_backoff`` seconds, back to
    ``poll_seconds`` once a round succeeds. ``on_round`` is called after each round that did not fail."""
    delay = poll_seconds
    while not stop.is_set() and (parent_pid is None or os.getppid() == parent_pid):
        try:
            did = work()
        except Exception as error:  # the helper outlives any one failure
            delay = min(max_backoff, delay * 2)
            failed(error, delay)
            stop.wait(delay)
            continue
        delay = poll_seconds
        if on_round is not None:
            on_round()
        if not did:
            stop.wait(poll_seconds)
