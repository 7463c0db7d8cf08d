"""Settings read from the environment; nothing here connects to anything."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from service.domain import StuckThresholds

DEFAULT_DATABASE_URL = "sqlite:///var/casestudies.db"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.startswith(("http://", "https://")) or any(c.isspace() for c in raw):
        raise SettingsError(f"{name} must be an http:// or https:// URL")
    return raw


@dataclass(frozen=True)
class DeliverySettings:
    """How the outbox is delivered (the NOTIFY_* and SLACK_WEBHOOK_URL settings; see the dispatcher)."""

    slack_webhook_url: str | None = field(default=None, repr=False)  # a secret: never logged
    max_attempts: int = 10
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0
    stuck_scan_seconds: float = 3600.0


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with; see the README's Configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    log_format: str = "auto"  # json | console | auto (console on a terminal, JSON otherwise)
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024
    db_pool_size: int = 5
    key_cache_seconds: float = 5.0
    state_cache_size: int = 10_000
    candidate_kpi_pct: float = 20.0
    stuck: StuckThresholds = field(default_factory=StuckThresholds)
    public_base_url: str = "http://127.0.0.1:8000"  # how people and other tools reach this service
    webhook_cache_seconds: float = 5.0
    notify: DeliverySettings = field(default_factory=DeliverySettings)

    def __post_init__(self) -> None:
        if self.notify.lease_seconds <= 3 * self.notify.timeout_seconds:
            raise SettingsError("NOTIFY_LEASE_SECONDS must be longer than three times NOTIFY_TIMEOUT_SECONDS "
                                "(connecting, sending and waiting for the answer may each take that long): a "
                                "message becomes another dispatcher's to send when its lease runs out")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read ``CASESTUDIES_*`` variables and ``DATABASE_URL``, falling back to defaults."""
        env = os.environ if env is None else env
        log_format = env.get("LOG_FORMAT", "auto").lower()
        if log_format not in ("json", "console", "auto"):
            raise SettingsError("LOG_FORMAT must be json, console or auto")
        log_level = env.get("LOG_LEVEL", "info").lower()
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        defaults, notify = StuckThresholds(), DeliverySettings()
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            # Default: where `make run` serves (PORT, 8000 unless set).
            public_base_url=_url(env, "PUBLIC_BASE_URL", f"http://127.0.0.1:{_int(env, 'PORT', 8000, minimum=1)}"),
            webhook_cache_seconds=_float(env, "WEBHOOK_CACHE_SECONDS", 5.0),
            notify=DeliverySettings(
                slack_webhook_url=_url(env, "SLACK_WEBHOOK_URL", None),
                max_attempts=_int(env, "NOTIFY_MAX_ATTEMPTS", notify.max_attempts, minimum=1),
                backoff_seconds=_float(env, "NOTIFY_BACKOFF_SECONDS", notify.backoff_seconds),
                backoff_max_seconds=_float(env, "NOTIFY_BACKOFF_MAX_SECONDS", notify.backoff_max_seconds),
                timeout_seconds=_float(env, "NOTIFY_TIMEOUT_SECONDS", notify.timeout_seconds),
                lease_seconds=_float(env, "NOTIFY_LEASE_SECONDS", notify.lease_seconds),
                stuck_scan_seconds=_float(env, "NOTIFY_STUCK_SCAN_SECONDS", notify.stuck_scan_seconds),
            ),
            log_format=log_format,
            log_level=log_level,
            db_pool_size=_int(env, "DB_POOL_SIZE", 5, minimum=1),
            key_cache_seconds=_float(env, "KEY_CACHE_SECONDS", 5.0),
            state_cache_size=_int(env, "STATE_CACHE_SIZE", 10_000),
            candidate_kpi_pct=_float(env, "CANDIDATE_KPI_IMPROVEMENT_PCT", 20.0),
            stuck=StuckThresholds(
                not_started_days=_int(env, "STUCK_NOT_STARTED_DAYS", defaults.not_started_days),
                no_activity_days=_int(env, "STUCK_NO_ACTIVITY_DAYS", defaults.no_activity_days),
                awaiting_approval_days=_int(env, "STUCK_AWAITING_APPROVAL_DAYS",
                                            defaults.awaiting_approval_days),
                hold_without_revisit_days=_int(env, "STUCK_HOLD_WITHOUT_REVISIT_DAYS",
                                               defaults.hold_without_revisit_days),
                missing_baseline_days=_int(env, "STUCK_MISSING_BASELINE_DAYS",
                                           defaults.missing_baseline_days),
            ),
        )

    def with_overrides(self, **changes) -> "Settings":
        """A copy with some settings changed (tests and the CLI use it)."""
        return replace(self, **changes)
