"""The processes ``casestudies serve`` runs (gunicorn with the API, the projections worker and the
outbox dispatcher), kept alive, and what anyone can learn about them.

``Supervisor`` starts each as a child process and, when one exits however it exits, starts it
again after a back-off (1 s, doubling to a minute; back to 1 s once a helper has run
for a minute), logging each exit and restart. The supervisor and every helper write what they
know into one folder (``HELPERS_DIR``, which ``serve`` sets): ``supervisor.json`` (each helper's
pid, restarts, last exit) and ``<helper>.beat`` (the helper's last completed round), each
replaced whole, so that any gunicorn worker can answer ``/healthz/details`` from them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import structlog

from service.telemetry import HELPER_PROGRESS, HELPER_RESTARTS, HELPER_UP
from service.times import utcnow

log = structlog.get_logger("casestudies.supervisor")

HELPERS_DIR = "HELPERS_DIR"  # the environment variable naming the folder
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
HEALTHY_AFTER = 60.0  # seconds a helper must run before its back-off starts again from the first
POLL = 0.2


def _folder() -> Path | None:
    value = os.environ.get(HELPERS_DIR)
    return Path(value) if value else None


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def beat(helper: str) -> None:
    """A helper finished a round of its work (idle rounds included): record when."""
    now = utcnow()
    HELPER_PROGRESS.labels(helper).set(now.timestamp())
    folder = _folder()
    if folder is not None:
        try:
            _replace(folder / f"{helper}.beat", json.dumps({"pid": os.getpid(), "at": now.isoformat()}))
        except OSError:
            pass  # the folder went away: serve is shutting down


@dataclass
class HelperState:
    command: list[str]
    pid: int | None = None
    running: bool = False
    restarts: int = 0
    started_at: str | None = None
    last_exit_code: int | None = None  # negative: killed by that signal
    last_exit_at: str | None = None
    next_start_at: str | None = None
    process: Any = field(default=None, repr=False)
    started_monotonic: float = field(default=0.0, repr=False)
    backoff: float = field(default=FIRST_BACKOFF, repr=False)
    due: float = field(default=0.0, repr=False)

    def public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PUBLIC}


PUBLIC = ("pid", "running", "restarts", "started_at", "last_exit_code", "last_exit_at", "next_start_at")


class Supervisor:
    """Keeps each child (a name and its command line) running until ``stop`` is set.

    Runs in the calling thread, which starts every child: a child is asked to die with its
    parent (Linux's parent-death signal), so that nothing it started outlives a ``serve`` that
    was killed outright."""

    def __init__(self, children: dict[str, Sequence[str]], *, stop_timeout: float = 20.0):
        self.children = {name: HelperState(list(command)) for name, command in children.items()}
        self.stop_timeout = stop_timeout

    def run(self, stop: threading.Event) -> None:
        for name in self.children:
            self._start(name)
        self._write()
        try:
            while not stop.wait(POLL):
                if self._watch():
                    self._write()
        finally:
            self._stop_all()

    def _start(self, name: str) -> None:
        state = self.children[name]
        parent = os.getpid()
        state.process = subprocess.Popen(state.command, preexec_fn=lambda: _die_with_parent(parent))
        state.pid, state.running = state.process.pid, True
        state.started_at, state.next_start_at = utcnow().isoformat(), None
        state.started_monotonic = time.monotonic()
        HELPER_UP.labels(name).set(1)
        log.info("helper_started", helper=name, pid=state.pid, restarts=state.restarts)

    def _watch(self) -> bool:
        changed, now = False, time.monotonic()
        for name, state in self.children.items():
            if state.running and (code := state.process.poll()) is not None:
                ran = now - state.started_monotonic
                if ran >= HEALTHY_AFTER:
                    state.backoff = FIRST_BACKOFF
                state.running, state.last_exit_code = False, code
                state.last_exit_at = utcnow().isoformat()
                state.due = now + state.backoff
                state.next_start_at = (utcnow() + timedelta(seconds=state.backoff)).isoformat()
                HELPER_UP.labels(name).set(0)
                log.warning("helper_exited", helper=name, pid=state.pid, exit_code=code,
                            ran_seconds=round(ran, 1), restart_in=state.backoff)
                state.backoff = min(MAX_BACKOFF, state.backoff * 2)
                changed = True
            elif not state.running and now >= state.due:
                state.restarts += 1
                HELPER_RESTARTS.labels(name).inc()
                self._start(name)
                changed = True
        return changed

    def _write(self) -> None:
        folder = _folder()
        if folder is None:
            return
        snapshot = {"pid": os.getpid(), "helpers": {name: state.public() for name, state in self.children.items()}}
        try:
            _replace(folder / "supervisor.json", json.dumps(snapshot))
        except OSError:
            pass

    def _stop_all(self) -> None:
        """Ask each child to stop (SIGTERM: gunicorn finishes the requests in hand), and kill what
        has not within ``stop_timeout``."""
        running = [state.process for state in self.children.values() if state.running]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("helpers_stopped", helpers=list(self.children))


def _die_with_parent(parent: int) -> None:
    """In a new child, before it runs its program: SIGTERM it when its parent dies (Linux only),
    and stop at once if the parent died before that was set."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)


def helpers_status() -> dict[str, dict[str, Any]] | None:
    """What the supervisor and the helpers last wrote, per helper (with ``last_progress_at``), or None
    where no supervisor runs beside this server (the helpers then run elsewhere)."""
    folder = _folder()
    if folder is None:
        return None
    try:
        snapshot = json.loads((folder / "supervisor.json").read_text())
    except (OSError, ValueError):
        return None
    helpers = snapshot.get("helpers", {})
    for name, state in helpers.items():
        try:
            state["last_progress_at"] = json.loads((folder / f"{name}.beat").read_text())["at"]
        except (OSError, ValueError, KeyError):
            state["last_progress_at"] = None
    return helpers
