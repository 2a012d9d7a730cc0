"""Is HQ alive: ``/healthz`` (the API answers) and ``/health`` (every part of HQ)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hq_server.api.dependencies import PUBLIC, Parts
from hq_server.process.supervision import hq_health

router = APIRouter(tags=["service"], dependencies=[PUBLIC])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health", responses={503: {"description": "a part of HQ is not alive"}})
def health(hq: Parts) -> JSONResponse:
    """Which parts of HQ are alive (ingest, fleet service, ...) and how far behind
    they are, from the rows their supervisors write: 200 when all are, else 503."""
    figures = hq_health(hq.engine)
    return JSONResponse(figures, status_code=200 if figures["ok"] else 503)
