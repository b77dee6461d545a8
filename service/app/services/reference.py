"""Asset-class reference data, held in process memory.

The rows only change through migrations (a deploy restarts the workers), so each worker loads them
once and refreshes after CACHE_TTL_STABLE seconds. `ref_hash` goes into projection cache keys, so a
changed default assumption can never be answered from an old projection.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.core.metrics import CACHE_HITS, CACHE_MISSES
from app.models import AssetClass

FIELDS = (
    "code",
    "name",
    "description",
    "default_cpr",
    "default_cdr",
    "loss_severity",
    "recovery_lag_months",
    "amortization_type",
    "data_tier",
    "default_amortization_term",
    "default_payment_rate",
    "default_revolving_months",
)


@dataclass(frozen=True, slots=True)
class ReferenceData:
    items: tuple[dict[str, object], ...]
    by_code: dict[str, dict[str, object]]
    ref_hash: str
    loaded_at: float


class ReferenceCache:
    def __init__(self, sessions: sessionmaker[Session], ttl: int) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self._data: ReferenceData | None = None
        self._lock = threading.Lock()

    def peek(self) -> ReferenceData | None:
        data = self._data
        if data is not None and time.monotonic() - data.loaded_at < self.ttl:
            CACHE_HITS.labels("reference").inc()
            return data
        return None

    def load(self) -> ReferenceData:
        """Blocking (database); call from a worker thread."""
        with self._lock:
            data = self.peek()
            if data is not None:
                return data
            CACHE_MISSES.labels("reference").inc()
            with self.sessions() as session:
                rows = session.scalars(select(AssetClass).order_by(AssetClass.code)).all()
            items = tuple({f: getattr(row, f) for f in FIELDS} for row in rows)
            digest = hashlib.sha256(orjson.dumps(items)).hexdigest()[:16]
            data = ReferenceData(
                items=items,
                by_code={str(i["code"]): i for i in items},
                ref_hash=digest,
                loaded_at=time.monotonic(),
            )
            self._data = data
            return data

    async def get(self) -> ReferenceData:
        data = self.peek()
        if data is None:
            data = await run_in_threadpool(self.load)
        return data

    def invalidate(self) -> None:
        self._data = None
