"""What every command shares: settings, the wired services, one line for a database error, reference
times, and progress bars on standard error (standard output is kept for what a command prints)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Iterator

import click
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from service.config import Settings, SettingsError
from service.times import EARLIEST, FORMS, LATEST, parse_moment

if TYPE_CHECKING:
    from service.bootstrap import Services


def settings() -> Settings:
    """The settings from the environment, or the reason they cannot be used."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn database failures into one clear line instead of a traceback."""
    try:
        yield
    except ArgumentError as error:
        raise click.ClickException(f"DATABASE_URL is not a database URL: {error}") from None
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        hint = " (has `casestudies db upgrade` been run?)" if "no such table" in reason or \
            "does not exist" in reason else ""
        raise click.ClickException(f"database error: {reason}{hint}") from None


def services(*, log_stream=sys.stderr) -> Services:
    """The wired services; their logs go to standard error unless a long-running command asks otherwise."""
    from service.bootstrap import build
    from service.logs import configure_logging

    chosen = settings()
    configure_logging(chosen.log_format, chosen.log_level, stream=log_stream)
    with database_errors():
        return build(chosen)


def when(value: str | None, *, start: bool) -> datetime | None:
    """A reference time given as an option (a date: its start, or its end unless ``start``)."""
    if value is None:
        return None
    try:
        return parse_moment(value, date_is_start=start)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not {FORMS}, from {EARLIEST.year} to {LATEST.year}") from None


class Bar:
    """A progress bar on standard error whose length is known once the work has counted it."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def start(self, length: int) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar = click.progressbar(length=length, label=self.label, file=sys.stderr)
        self.bar.__enter__()

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def stop_on_signals():
    """An event set by SIGTERM or Ctrl-C, for commands that run until stopped."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
