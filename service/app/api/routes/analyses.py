from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from app.api.deps import AUTH_RESPONSES, JobsDep, RedisDep, ReferenceDep, SessionsDep, WriteToken
from app.core.redis import REDIS_ERRORS
from app.schemas.models import AnalysisAccepted, AnalysisRequest, AnalysisStatus
from app.services.jobs import run_analysis

router = APIRouter(prefix="/api/v1/analyses", tags=["analyses"])
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "Job store (Redis) unavailable"}
}


@router.post(
    "",
    response_model=AnalysisAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**AUTH_RESPONSES, **UNAVAILABLE},
    summary="Start a background analysis of many pools; poll the status URL",
)
async def start_analysis(
    body: AnalysisRequest,
    request: Request,
    response: Response,
    jobs: JobsDep,
    redis: RedisDep,
    sessions: SessionsDep,
    reference: ReferenceDep,
    _t: WriteToken,
) -> AnalysisAccepted:
    try:
        state = await jobs.create(total=len(set(body.pool_ids)))
    except REDIS_ERRORS as exc:
        redis.mark_down(exc)
        raise HTTPException(status_code=503, detail="Job store unavailable") from None
    task = asyncio.create_task(
        run_analysis(jobs, state, sessions, reference, body.pool_ids, body.assumptions)
    )
    tasks: set[asyncio.Task[None]] = request.app.state.tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    url = f"/api/v1/analyses/{state['job_id']}"
    response.headers["Location"] = url
    return AnalysisAccepted(job_id=state["job_id"], status=state["status"], status_url=url)


@router.get(
    "/{job_id}",
    response_model=AnalysisStatus,
    responses={404: {"description": "Unknown or expired job"}, **UNAVAILABLE},
    summary="Status (and result when done) of an analysis",
)
async def analysis_status(
    job_id: Annotated[str, Path(max_length=64)], jobs: JobsDep, redis: RedisDep
) -> AnalysisStatus:
    try:
        state = await jobs.get(job_id)
    except REDIS_ERRORS as exc:
        redis.mark_down(exc)
        raise HTTPException(status_code=503, detail="Job store unavailable") from None
    if state is None:
        raise HTTPException(status_code=404, detail="Unknown or expired job")
    return AnalysisStatus(**state)
