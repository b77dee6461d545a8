from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import SettingsError, get_settings, load_settings, parse_rate

GOOD_SECRET = "k" * 48


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("ENVIRONMENT", "SECRET_KEY", "REDIS_PORT", "DATABASE_URL", "ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


def test_defaults_are_development_safe() -> None:
    s = load_settings()
    assert s.environment == "development"
    assert s.rate_limit == (100, 60)
    assert s.rate_limit_burst == 150
    assert s.cache_ttl_stable == 86400
    assert s.database_url.startswith("sqlite")


def test_reads_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "REDIS_PORT=6390\nCORS_ORIGINS=https://a.example,https://b.example\n"
    )
    monkeypatch.setenv("ALLOWED_HOSTS", '["api.example", "localhost"]')
    s = load_settings()
    assert s.redis_port == 6390
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.allowed_hosts == ["api.example", "localhost"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_PORT", "70000"),
        ("REDIS_PORT", "abc"),
        ("LOG_LEVEL", "LOUD"),
        ("RATE_LIMIT_DEFAULT", "lots"),
        ("RATE_LIMIT_DEFAULT", "0/minute"),
        ("CACHE_TTL", "0"),
        ("SENTRY_TRACES_SAMPLE_RATE", "2"),
        ("TRUSTED_PROXIES", "not-an-ip"),
        ("DATABASE_URL", "::nonsense::"),
        ("ENVIRONMENT", "moon"),
        ("REDIS_SSL", "maybe"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"^Invalid configuration: {variable}:"):
        load_settings()


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize(
    "secret",
    [
        None,
        "change-me",
        "changeme",
        "",
        "short-but-real",
        "change-me-to-a-long-random-secret-value",  # long enough, still a placeholder
        "Change-This-Before-Deploying-To-Production-Please",
        "secret" + " " * 40,  # a placeholder padded past the length check
    ],
)
def test_production_refuses_missing_or_placeholder_secret(
    monkeypatch: pytest.MonkeyPatch, environment: str, secret: str | None
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    if secret is not None:
        monkeypatch.setenv("SECRET_KEY", secret)
    with pytest.raises(SettingsError, match="SECRET_KEY") as info:
        load_settings()
    assert secret is None or not secret or secret not in str(info.value)  # never echoed


def test_production_accepts_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    assert load_settings().is_production


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_secret_must_be_at_least_32_characters(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    import secrets

    monkeypatch.setenv("ENVIRONMENT", environment)
    short = secrets.token_hex(16)[:31]
    monkeypatch.setenv("SECRET_KEY", short)
    with pytest.raises(SettingsError, match="SECRET_KEY is shorter than 32 characters") as info:
        load_settings()
    assert short not in str(info.value)
    monkeypatch.setenv("SECRET_KEY", secrets.token_hex(16))  # exactly 32 characters
    assert load_settings().environment == environment


def test_staging_accepts_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    settings = load_settings()
    assert settings.environment == "staging"
    assert not settings.is_production


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_allow_the_placeholder(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    assert load_settings().secret_key.get_secret_value() == "change-me"


def test_pool_size_cannot_exceed_max_connections() -> None:
    with pytest.raises(SettingsError, match="REDIS_CONNECTION_POOL_SIZE"):
        load_settings(redis_connection_pool_size=20, redis_max_connections=10)


def test_pool_size_may_equal_max_connections() -> None:
    """REDIS_CONNECTION_POOL_SIZE = REDIS_MAX_CONNECTIONS is allowed: every connection opened early."""
    settings = load_settings(redis_connection_pool_size=10, redis_max_connections=10)
    assert settings.redis_connection_pool_size == settings.redis_max_connections == 10


def test_address_lists_accept_host_bits_and_stray_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRUSTED_PROXIES/ADMIN_ALLOWED_IPS take '10.0.0.1/8' as 10.0.0.0/8 and skip empty items."""
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.1/8,")
    monkeypatch.setenv("ADMIN_ALLOWED_IPS", ",192.168.1.7/24,,::1")
    settings = load_settings()
    assert settings.trusted_proxies == ["127.0.0.1", "10.0.0.1/8"]
    assert settings.admin_allowed_ips == ["192.168.1.7/24", "::1"]


def test_get_settings_is_cached() -> None:
    assert get_settings() is get_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/minute", (100, 60)),
        ("5/s", (5, 1)),
        (" 7 / hour", (7, 3600)),
        ("3/m", (3, 60)),
        ("2/H", (2, 3600)),
        ("9/Second", (9, 1)),
    ],
)
def test_parse_rate(text: str, expected: tuple[int, int]) -> None:
    assert parse_rate(text) == expected


def test_app_refuses_to_start_with_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "ENVIRONMENT": "production", "SECRET_KEY": "change-me"}
    proc = subprocess.run(
        [sys.executable, "-c", "import app.main; app.main.app"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode != 0
    assert "Invalid configuration: SECRET_KEY is missing or a placeholder" in proc.stderr
