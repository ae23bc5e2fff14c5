"""/cases: upload (streamed multipart), list, get, delete."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from malenia.server.service import TrainingService
from malenia.server.uploads import MultipartToFolder, TooLarge

UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "lesions", "report"],
    "properties": {"image": {"type": "string", "format": "binary", "description": "CT, NIfTI (.nii.gz)"},
                   "lesions": {"type": "string", "format": "binary", "description": "instance labels 0..K, NIfTI"},
                   "report": {"type": "string", "format": "binary", "description": "malenia-case/1 report.json"},
                   "name": {"type": "string", "description": "display label (never a path)"}}}}}}}


def router(service: TrainingService) -> APIRouter:
    api = APIRouter(prefix="/cases", tags=["cases"])

    @api.post("", status_code=201, openapi_extra=UPLOAD_DOC,
              responses={200: {"description": "identical case already stored"}, 413: {"description": "too large"},
                         422: {"description": "refused, with the reason"}})
    async def upload_case(request: Request, response: Response) -> dict[str, Any]:
        staged = await _stage_upload(service, request)
        result = await run_in_threadpool(service.cases.ingest, staged)
        response.status_code = 200 if result.duplicate else 201
        return {"case": result.case, "duplicate": result.duplicate}

    @api.get("")
    def list_cases() -> dict[str, Any]:
        return {"cases": service.cases.list()}

    @api.get("/{case_id}")
    def get_case(case_id: str) -> dict[str, Any]:
        return service.cases.get(case_id)

    @api.delete("/{case_id}", status_code=204)
    def delete_case(case_id: str) -> Response:
        service.cases.delete(case_id, service.jobs.active_case_ids())
        return Response(status_code=204)

    return api


async def _stage_upload(service: TrainingService, request: Request):
    """The body, streamed part by part into a staging folder (removed again on any failure)."""
    limits = service.cfg.limits
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limits.max_request_bytes):
        raise TooLarge(f"upload larger than the limit of {limits.max_request_bytes} bytes")
    folder = service.layout.new_staging_dir("upload")
    try:
        sink = MultipartToFolder(request.headers.get("content-type", ""), folder, limits)
        try:
            async for chunk in request.stream():
                sink.feed(chunk)
            return await run_in_threadpool(sink.finish)  # it may gzip a large raw .nii: not on the event loop
        finally:
            sink.close()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
