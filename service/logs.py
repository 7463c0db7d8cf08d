"""Structured logs: JSON lines in production, readable console lines on a terminal."""
from __future__ import annotations

import logging
import sys

import orjson
import structlog
import structlog.tracebacks


def _uses_json(log_format: str) -> bool:
    return log_format == "json" or (log_format == "auto" and not sys.stdout.isatty())


def _renderer(use_json: bool):
    return (structlog.processors.JSONRenderer() if use_json
            else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()))


def stdlib_logging_config(log_format: str = "auto", level: str = "info") -> dict:
    """A ``logging.config.dictConfig`` that renders other libraries' logs (gunicorn's) like ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": _renderer(_uses_json(log_format)),
            "foreign_pre_chain": [structlog.processors.add_log_level,
                                  structlog.processors.TimeStamper(fmt="iso", utc=True)],
        }},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                "formatter": "structlog"}},
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "alembic": {"level": "WARNING"},  # /readyz asks Alembic for the revision on every call
            "transitions": {"level": "WARNING"},  # a line per state change; events are logged already
            # A line per request with its URL: a Slack webhook URL is a secret.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: str = "auto", level: str = "info", stream=None) -> None:
    """Set up structlog for the process; ``auto`` means console on a terminal, JSON otherwise.

    Lines go to standard output unless ``stream`` is given (one-shot commands log to standard
    error, keeping standard output for what they print)."""
    stream = stream or sys.stdout
    use_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    # JSON lines are rendered by orjson straight to bytes: a log line per request and per
    # event is on every append's path.
    renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps) if use_json else _renderer(False)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        # Tracebacks as data, without each frame's local variables: they may hold request bodies,
        # keys, webhook secrets or the Slack URL.
        processors.append(structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)))
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=(structlog.BytesLoggerFactory(stream.buffer) if use_json
                        else structlog.PrintLoggerFactory(stream)),
        cache_logger_on_first_use=False,
    )
