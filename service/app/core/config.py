"""Settings from the environment and `.env`, validated once per process.

An invalid value, or a missing/placeholder SECRET_KEY outside development and test, raises
`SettingsError` whose message names the offending variable(s), so start-up stops with a readable line.
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "change_me", "secret", "please-change-me", "replace-me", "xxx"}
)
MIN_SECRET_LENGTH = 32
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|s|m|h)\s*$", re.IGNORECASE)
_PERIODS = {"second": 1, "s": 1, "minute": 60, "m": 60, "hour": 3600, "h": 3600}

CsvList = Annotated[list[str], NoDecode]


class SettingsError(RuntimeError):
    """Configuration is invalid; the message names the environment variables at fault."""


def split_csv(text: str) -> list[str]:
    """'a, b' or a JSON list '["a", "b"]' -> ['a', 'b'] (gunicorn_config.py reads TRUSTED_PROXIES
    with it too, so uvicorn and the settings agree)."""
    text = text.strip()
    if text.startswith("["):
        items: list[str] = json.loads(text)  # pydantic validates the items
        return items
    return [item.strip() for item in text.split(",") if item.strip()]


def _split_csv(value: object) -> object:
    return split_csv(value) if isinstance(value, str) else value


def parse_rate(value: str) -> tuple[int, int]:
    """Parse '100/minute' into (requests, period_seconds)."""
    match = _RATE_RE.match(value)
    if not match or int(match.group(1)) <= 0:
        raise ValueError("must look like '100/minute' (N/second, N/minute or N/hour, N > 0)")
    return int(match.group(1)), _PERIODS[match.group(2).lower()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", case_sensitive=False, extra="ignore"
    )

    environment: Literal["development", "test", "staging", "production"] = "development"
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_config: str | None = None
    secret_key: SecretStr = SecretStr("change-me")
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    allowed_hosts: CsvList = Field(default_factory=lambda: ["*"])
    cors_origins: CsvList = Field(default_factory=list)
    trusted_proxies: CsvList = Field(default_factory=lambda: ["127.0.0.1"])
    admin_allowed_ips: CsvList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    request_timeout: float = Field(default=30.0, gt=0, le=600)
    app_release: str | None = None

    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_username: str | None = None  # an ACL user (Redis 6+); None authenticates as `default`
    redis_password: SecretStr | None = None
    redis_ssl: bool = False
    redis_ssl_ca_certs: str | None = None  # CA bundle that signed the Redis server's certificate
    redis_database: int = Field(default=0, ge=0, le=15)
    redis_timeout: float = Field(default=0.5, gt=0, le=60)
    redis_retry_count: int = Field(default=2, ge=0, le=10)
    redis_retry_delay: float = Field(default=0.05, ge=0, le=10)
    redis_connection_pool_size: int = Field(default=4, ge=0, le=1000)
    redis_max_connections: int = Field(default=50, ge=1, le=10000)
    redis_down_backoff: float = Field(default=1.0, ge=0, le=60)

    cache_ttl: int = Field(default=3600, ge=1, le=30 * 86400)
    cache_ttl_stable: int = Field(default=86400, ge=1, le=30 * 86400)
    cache_ttl_dynamic: int = Field(default=3600, ge=1, le=30 * 86400)
    enable_caching: bool = True

    rate_limit_enabled: bool = True
    rate_limit_default: str = "100/minute"
    rate_limit_burst: int = Field(default=150, ge=1, le=1_000_000)
    rate_limit_fail_open: bool = True

    enable_prometheus: bool = True
    prometheus_multiproc_dir: str | None = None
    enable_sentry: bool = False
    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    enable_tracing: bool = False
    tracing_otlp_endpoint: str | None = None  # OTLP/HTTP URL, e.g. http://host:4318/v1/traces
    tracing_sample_rate: float = Field(default=0.1, ge=0, le=1)
    tracing_service_name: str = Field(default="asset-classes-api", min_length=1)

    database_url: str = "sqlite:///./asset_classes.db"
    db_connection_timeout: float = Field(default=10.0, gt=0, le=300)
    db_pool_size: int = Field(default=5, ge=1, le=1000)
    db_max_overflow: int = Field(default=10, ge=0, le=1000)

    _split = field_validator(
        "allowed_hosts", "cors_origins", "trusted_proxies", "admin_allowed_ips", mode="before"
    )(_split_csv)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("environment", mode="before")
    @classmethod
    def _lower_env(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("rate_limit_default")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("trusted_proxies", "admin_allowed_ips")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError("is not a valid SQLAlchemy URL") from exc
        return value

    @field_validator("tracing_otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises on a port that is not a number in range)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http:// or https:// URL with a host (OTLP over HTTP), "
                "e.g. http://127.0.0.1:4318/v1/traces"
            )
        return value

    @model_validator(mode="after")
    def _check_tracing(self) -> Settings:
        if self.enable_tracing and not self.tracing_otlp_endpoint:
            raise ValueError("ENABLE_TRACING needs TRACING_OTLP_ENDPOINT (where spans are sent)")
        return self

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.redis_connection_pool_size > self.redis_max_connections:
            raise ValueError("REDIS_CONNECTION_POOL_SIZE must not exceed REDIS_MAX_CONNECTIONS")
        if self.environment in ("development", "test"):
            return self
        secret = self.secret_key.get_secret_value()
        if secret.strip().lower() in PLACEHOLDER_SECRETS or secret.lower().startswith("change"):
            raise ValueError(
                f"SECRET_KEY is missing or a placeholder; ENVIRONMENT={self.environment} "
                "needs a real secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"SECRET_KEY is shorter than {MIN_SECRET_LENGTH} characters "
                f"(ENVIRONMENT={self.environment})"
            )
        return self

    @property
    def rate_limit(self) -> tuple[int, int]:
        return parse_rate(self.rate_limit_default)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        name = loc.upper() if loc else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = (
            ""
            if loc in ("secret_key", "redis_password", "sentry_dsn") or not loc
            else f" (got {given!r})"
        )
        lines.append(f"{name}: {msg}{shown}" if loc else msg)
    return "Invalid configuration: " + "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
