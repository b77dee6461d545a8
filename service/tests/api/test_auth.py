from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.security import create_token
from app.main import create_app
from tests.conftest import POOL, with_peer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_write_without_token_is_401(client: TestClient) -> None:
    resp = client.post("/api/v1/asset-pools", json=POOL)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


def test_expired_token_is_401(client: TestClient, settings: Settings) -> None:
    token = create_token("u", ["write"], settings=settings, ttl_seconds=60, now=time.time() - 120)
    resp = client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token))
    assert resp.status_code == 401
    assert resp.json()["detail"] == "Token expired"


def test_forged_token_is_401(client: TestClient, settings: Settings) -> None:
    forged = jwt.encode(
        {"sub": "u", "scopes": ["write"], "iat": int(time.time()), "exp": int(time.time()) + 600},
        "another-key-" * 4,
        algorithm="HS256",
    )
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(forged)).status_code == 401
    unsigned = jwt.encode(
        {"sub": "u", "scopes": ["write"], "iat": int(time.time()), "exp": int(time.time()) + 600},
        None,
        algorithm="none",
    )
    assert (
        client.post("/api/v1/asset-pools", json=POOL, headers=bearer(unsigned)).status_code == 401
    )
    assert (
        client.post("/api/v1/asset-pools", json=POOL, headers=bearer("garbage")).status_code == 401
    )


def test_token_without_expiry_is_401(client: TestClient, settings: Settings) -> None:
    token = jwt.encode(
        {"sub": "u", "scopes": ["write"], "iat": int(time.time())},
        settings.secret_key.get_secret_value(),
        algorithm="HS256",
    )
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("missing", ["sub", "iat"])
def test_token_without_subject_or_issue_time_is_401(
    client: TestClient, settings: Settings, missing: str
) -> None:
    """`sub` and `iat` are required claims, like `exp`: a signed token without one gets 401."""
    now = int(time.time())
    claims = {"sub": "u", "scopes": ["write"], "iat": now, "exp": now + 600}
    del claims[missing]
    token = jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm="HS256")
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token)).status_code == 401


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # 46-byte test key
def test_token_signed_with_another_hs_algorithm_is_401(
    client: TestClient, settings: Settings
) -> None:
    """Only JWT_ALGORITHM (HS256 here) is accepted: the same key with HS512 gets 401."""
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "scopes": ["write"], "iat": now, "exp": now + 600},
        settings.secret_key.get_secret_value(),
        algorithm="HS512",
    )
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    "scopes",
    ["write", 7, ["write", 1], {"write": True}],
    ids=["string", "number", "list-with-a-number", "object"],
)
def test_scopes_claim_that_is_not_a_list_of_strings_is_401(
    client: TestClient, settings: Settings, scopes: object
) -> None:
    """A validly signed token whose scopes claim is not a list of strings is refused: 401."""
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "scopes": scopes, "iat": now, "exp": now + 600},
        settings.secret_key.get_secret_value(),
        algorithm="HS256",
    )
    resp = client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token))
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"] == "Bearer"


def test_read_scope_cannot_write(client: TestClient, settings: Settings) -> None:
    token = create_token("reader", ["read"], settings=settings)
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token)).status_code == 403


def test_valid_write_token_works(client: TestClient, settings: Settings) -> None:
    token = create_token("writer", ["write"], settings=settings)
    assert client.post("/api/v1/asset-pools", json=POOL, headers=bearer(token)).status_code == 201


def test_patch_and_delete_need_a_valid_write_token(
    client: TestClient, settings: Settings, pool: dict[str, Any]
) -> None:
    url = f"/api/v1/asset-pools/{pool['id']}"
    expired = create_token("u", ["write"], settings=settings, ttl_seconds=60, now=time.time() - 120)
    forged = jwt.encode(
        {"sub": "u", "scopes": ["write"], "iat": int(time.time()), "exp": int(time.time()) + 600},
        "another-key-" * 4,
        algorithm="HS256",
    )
    reader = create_token("reader", ["read"], settings=settings)
    for headers, status in (
        ({}, 401),
        (bearer(expired), 401),
        (bearer(forged), 401),
        (bearer("garbage"), 401),
        (bearer(reader), 403),
    ):
        patched = client.patch(url, json={"wac": 0.01}, headers=headers)
        assert patched.status_code == status, (headers, patched.text)
        deleted = client.delete(url, headers=headers)
        assert deleted.status_code == status, (headers, deleted.text)
        if status == 401:
            assert patched.headers["www-authenticate"] == "Bearer"
            assert deleted.headers["www-authenticate"] == "Bearer"
    assert client.get(url).json() == pool  # neither changed nor deleted


def test_admin_needs_scope_and_allowed_address(make_settings: Any, pool: dict[str, Any]) -> None:
    settings = make_settings(admin_allowed_ips="10.0.0.0/8")
    app = create_app(settings)
    admin = bearer(create_token("ops", ["admin"], settings=settings))
    writer = bearer(create_token("dev", ["write"], settings=settings))
    inside, outside = {"X-Test-Peer": "10.1.2.3"}, {"X-Test-Peer": "192.168.1.1"}
    with TestClient(with_peer(app)) as c:
        assert c.delete("/api/v1/admin/cache", headers={**inside, **writer}).status_code == 403
        assert c.delete("/api/v1/admin/cache", headers=inside).status_code == 401
        c.post(f"/api/v1/asset-pools/{pool['id']}/cashflows")
        resp = c.delete("/api/v1/admin/cache", headers={**inside, **admin})
        assert resp.status_code == 200
        assert resp.json()["removed"] == 2  # the projection and the pool's index set
        assert c.delete("/api/v1/admin/cache", headers={**outside, **admin}).status_code == 403


def test_admin_allow_list_checks_the_client_behind_a_trusted_proxy(
    make_settings: Any, pool: dict[str, Any]
) -> None:
    """Behind a trusted proxy the allow-list applies to the X-Forwarded-For client, not the proxy;
    from any other peer the header is ignored, so it cannot smuggle an allowed address in."""
    settings = make_settings(admin_allowed_ips="10.0.0.0/8", trusted_proxies="192.0.2.1")
    admin = bearer(create_token("ops", ["admin"], settings=settings))
    with TestClient(with_peer(create_app(settings))) as c:

        def flush(peer: str, forwarded_for: str) -> int:
            headers = {**admin, "X-Test-Peer": peer, "X-Forwarded-For": forwarded_for}
            return c.delete("/api/v1/admin/cache", headers=headers).status_code

        assert flush("192.0.2.1", "10.1.2.3") == 200
        assert flush("192.0.2.1", "192.168.1.1") == 403
        assert flush("198.51.100.7", "10.1.2.3") == 403


def test_docs_and_schema_are_hidden_in_production_unless_debug(make_settings: Any) -> None:
    for overrides, expected in (
        ({"environment": "production"}, 404),
        ({"environment": "production", "debug": True}, 200),
        ({"environment": "development"}, 200),
    ):
        with TestClient(create_app(make_settings(**overrides))) as c:
            assert c.get("/docs").status_code == expected, overrides
            assert c.get("/openapi.json").status_code == expected, overrides


def test_token_lifetime_defaults_to_jwt_expire_minutes(make_settings: Any) -> None:
    settings = make_settings(jwt_expire_minutes=7)
    token = create_token("u", ["read"], settings=settings, now=time.time())
    claims = jwt.decode(token, settings.secret_key.get_secret_value(), algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7 * 60
