"""Request dependencies (FastAPI `Annotated` style)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.net import client_ip, ip_in, parse_networks
from app.core.redis import RedisManager
from app.core.security import TokenData, TokenError, decode_token
from app.services.cache import ProjectionCache
from app.services.jobs import JobStore
from app.services.reference import ReferenceCache

bearer = HTTPBearer(auto_error=False, description="JWT minted with `asset-classes-token`")

# The getters below only read app.state, so they are `async def`: FastAPI runs a plain `def`
# dependency in the thread pool, a thread hop per dependency on every request.


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_session(request: Request) -> Iterator[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session:
        yield session


async def get_redis(request: Request) -> RedisManager:
    manager: RedisManager = request.app.state.redis
    return manager


async def get_cache(request: Request) -> ProjectionCache:
    cache: ProjectionCache = request.app.state.cache
    return cache


async def get_reference(request: Request) -> ReferenceCache:
    reference: ReferenceCache = request.app.state.reference
    return reference


async def get_jobs(request: Request) -> JobStore:
    jobs: JobStore = request.app.state.jobs
    return jobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
RedisDep = Annotated[RedisManager, Depends(get_redis)]
CacheDep = Annotated[ProjectionCache, Depends(get_cache)]
ReferenceDep = Annotated[ReferenceCache, Depends(get_reference)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def current_token(
    security_scopes: SecurityScopes,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> TokenData:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("Not authenticated")
    try:
        token = decode_token(credentials.credentials, settings)
    except TokenError as exc:
        raise _unauthorized(str(exc).capitalize()) from None
    missing = set(security_scopes.scopes) - token.scopes
    if missing:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"Token lacks scope: {', '.join(sorted(missing))}",
        )
    return token


def require(*scopes: str) -> Any:
    return Security(current_token, scopes=list(scopes))


WriteToken = Annotated[TokenData, require("write")]


def admin_ip(request: Request, settings: SettingsDep) -> str:
    ip = client_ip(request.scope, parse_networks(tuple(settings.trusted_proxies)))
    if not ip_in(ip, parse_networks(tuple(settings.admin_allowed_ips))):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Address not allowed")
    return ip


def admin_token(
    token: Annotated[TokenData, require("admin")], _ip: Annotated[str, Depends(admin_ip)]
) -> TokenData:
    return token


AdminToken = Annotated[TokenData, Depends(admin_token)]

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, forged or expired bearer token"},
    403: {"description": "Token lacks the required scope"},
}
