"""JWT bearer tokens (HS*), signed with SECRET_KEY; every token carries an expiry."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from app.core.config import Settings

KNOWN_SCOPES = ("read", "write", "admin")


@dataclass(frozen=True, slots=True)
class TokenData:
    subject: str
    scopes: frozenset[str]
    expires_at: int


class TokenError(Exception):
    """The token is missing, malformed, forged or expired."""


def create_token(
    subject: str,
    scopes: list[str] | tuple[str, ...],
    *,
    settings: Settings,
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    ttl = ttl_seconds if ttl_seconds is not None else settings.jwt_expire_minutes * 60
    claims = {
        "sub": subject,
        "scopes": sorted(set(scopes)),
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, settings.secret_key.get_secret_value(), algorithm=settings.jwt_algorithm
    )


def decode_token(token: str, settings: Settings) -> TokenData:
    try:
        claims = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            options={"require": ["exp", "sub", "iat"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    scopes = claims.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise TokenError("invalid token")
    return TokenData(
        subject=str(claims["sub"]), scopes=frozenset(scopes), expires_at=int(claims["exp"])
    )
