"""/jobs: start a fine-tuning job, list, get, log, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from malenia.server.service import TrainingService


class JobRequest(BaseModel):
    # A misspelt key or `"steps": true` is the client's mistake to hear about, not a default or a 1 to run with.
    model_config = ConfigDict(extra="forbid")

    steps: StrictInt = Field(ge=1, le=10**9, description="training steps of the fine-tuning run")
    case_ids: list[str] | None = Field(None, description="training cases; default: all stored cases")
    val_case_ids: list[str] | None = Field(None, description="validation cases; default: a share of case_ids")
    base_version: str | None = Field(None, description="model version to start from; default: the current one")
    replay_fraction: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False,
                                   description="share of batches drawn from earlier data")


def router(service: TrainingService) -> APIRouter:
    api = APIRouter(prefix="/jobs", tags=["jobs"])

    @api.post("", status_code=202)
    def start_job(req: JobRequest) -> dict[str, Any]:
        return service.jobs.submit(req.model_dump())

    @api.get("")
    def list_jobs() -> dict[str, Any]:
        return {"jobs": service.jobs.list()}

    @api.get("/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return service.jobs.get(job_id)

    @api.get("/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: str, lines: int = Query(200, ge=1, le=10000)) -> str:
        return service.jobs.log_tail(job_id, lines)

    @api.post("/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return service.jobs.cancel(job_id)

    return api
