"""Settings read from the environment (pydantic-settings); nothing here connects to anything.

Each setting's environment variable is its name in capitals (``DATABASE_URL``); a group's settings
carry the group's name before theirs (``STUCK_NOT_STARTED_DAYS``, ``NOTIFY_MAX_ATTEMPTS``). Every
default is written once, where the setting is declared: here, or in the group's own dataclass.
``Settings()`` is the defaults and whatever it is given; ``Settings.from_env()`` reads the environment.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from service.domain import StuckThresholds

PositiveInt = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _http_url(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"https?://\S+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def master_key_bytes(text: str) -> bytes:
    """The 32 bytes of a personal data master key given as base64url; ValueError saying what is wrong."""
    try:
        given = text.strip()
        raw = base64.b64decode(given + "=" * (-len(given) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64url of 32 random bytes (`casestudies people new-key` makes one)") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes once decoded, not {len(raw)} (`casestudies people new-key` makes one)")
    return raw


def _master_key(value: str) -> str:
    master_key_bytes(value)
    return value.strip()


def _networks(value: Any) -> Any:
    """A comma-separated list of IP addresses or networks, each one checked."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    for part in value:
        ipaddress.ip_network(part, strict=False)  # ValueError names what is wrong
    return tuple(value)


Networks = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_networks)]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class DeliverySettings:
    """How the dispatcher delivers the outbox (the NOTIFY_* settings)."""

    max_attempts: PositiveInt = 10
    backoff_seconds: Seconds = 5.0
    backoff_max_seconds: Seconds = 3600.0
    timeout_seconds: Seconds = 10.0
    lease_seconds: Seconds = 60.0
    stuck_scan_seconds: Seconds = 3600.0  # 0: never scan
    # sent messages are deleted this long after delivery (dead ones stay until retried or discarded)
    retention_days: Annotated[float, Field(gt=0, le=36_500, allow_inf_nan=False)] = 30.0

    def __post_init__(self) -> None:
        if self.lease_seconds <= 3 * self.timeout_seconds:
            raise ValueError("NOTIFY_LEASE_SECONDS must be longer than three times NOTIFY_TIMEOUT_SECONDS "
                             "(connecting, sending and waiting for the answer may each take that long): a "
                             "message becomes another dispatcher's to send when its lease runs out")


class Settings(BaseSettings):
    """Everything the service can be configured with; see the README's Configuration table."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_nested_delimiter="_", env_nested_max_split=1,
                                      env_ignore_empty=True)

    database_url: str = "sqlite:///var/casestudies.db"
    # auto: console on a terminal, JSON otherwise
    log_format: Annotated[Literal["json", "console", "auto"], BeforeValidator(_lower)] = "auto"
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    db_pool_size: PositiveInt = 5
    key_cache_seconds: Seconds = 5.0
    state_cache_size: Annotated[int, Field(ge=0)] = 10_000
    candidate_kpi_improvement_pct: float = 20.0
    stuck: StuckThresholds = Field(default_factory=StuckThresholds)
    port: Annotated[int, Field(ge=1, le=65535)] = 8000  # where `make run` serves
    public_base_url: HttpUrl | None = None  # how people and other tools reach this service (default: PORT's)
    webhook_cache_seconds: Seconds = 5.0
    # internal addresses webhooks may nevertheless be delivered to (e.g. "10.20.0.0/16,127.0.0.1")
    webhook_allowed_networks: Networks = ()
    read_wait_seconds: Seconds = 2.0  # how long a read asking for a position waits for the projections
    costly_reads_per_key: Annotated[int, Field(ge=0)] = 1  # reports and projections at once, per key (0: no limit)
    statement_timeout_seconds: Seconds = 20.0  # for requests, on PostgreSQL (0: none)
    slack_webhook_url: HttpUrl | None = Field(default=None, repr=False)  # a secret: never logged
    # signs the dashboard's session cookies; every process of one server must share it (`serve`
    # makes one for its run when it is not set, `make run` keeps one in var/session-secret)
    session_secret: Annotated[str, Field(min_length=32)] | None = Field(default=None, repr=False)
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0  # a dashboard sign-in lasts this long
    # the master key of personal data (base64url of 32 random bytes: `casestudies people new-key`);
    # people's keys are kept encrypted under it. Without it, events naming a person are refused.
    personal_data_key: Annotated[str, AfterValidator(_master_key)] | None = Field(default=None, repr=False)
    subject_cache_seconds: Seconds = 30.0  # how long a writer remembers a person's key
    notify: DeliverySettings = Field(default_factory=DeliverySettings)

    @model_validator(mode="before")
    @classmethod
    def _links_default_to_where_make_run_serves(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("public_base_url"):
            port = values.get("port", cls.model_fields["port"].default)
            values = {**values, "public_base_url": f"http://127.0.0.1:{port}"}
        return values

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **sources: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # Settings(...) is what it is given; from_env() reads the environment

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """The settings in ``env`` (default: the process's environment), or SettingsError naming each
        variable at fault."""
        try:
            return cls(**_Environment(cls, os.environ if env is None else env)())
        except ValidationError as error:
            raise SettingsError("; ".join(f"{_variable(problem['loc'])}: {problem['msg'].removeprefix('Value error, ')}"
                                          for problem in error.errors(include_url=False))) from None


class _Environment(EnvSettingsSource):
    """pydantic-settings' reading of environment variables, from a mapping given."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self.given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self.given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _variable(loc: tuple[Any, ...]) -> str:
    """The environment variable a validation error's location names."""
    return "_".join(str(part) for part in loc if isinstance(part, str)).upper() or "settings"
