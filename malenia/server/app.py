"""The HTTP API (FastAPI) over a TrainingService.

Every path except GET /health needs `Authorization: Bearer <token>`; the check is an ASGI
middleware in front of routing, so it also covers unknown paths and runs before any body is read.
A client that sends `X-Malenia-Api` with another major version gets 400 with both versions.
The OpenAPI schema is served at /openapi.json (behind the token like everything else).
"""

from __future__ import annotations

import contextlib
import shutil
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import Headers

from malenia import __version__
from malenia.errors import InputError, MaleniaError
from malenia.server import API_HEADER, API_VERSION, api_compatible
from malenia.server.cases import Conflict, NotFound
from malenia.server.service import TrainingService
from malenia.server.uploads import MultipartToFolder, TooLarge

PUBLIC_PATHS = {"/health"}


class JobRequest(BaseModel):
    steps: int = Field(ge=1, description="training steps of the fine-tuning run")
    case_ids: list[str] | None = Field(None, description="training cases; default: all stored cases")
    val_case_ids: list[str] | None = Field(None, description="validation cases; default: a share of case_ids")
    base_version: str | None = Field(None, description="model version to start from; default: the current one")
    replay_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of batches drawn from earlier data")


class PromoteRequest(BaseModel):
    reason: str = Field("promoted by hand", max_length=200)


def status_for(err: MaleniaError) -> int:
    for cls, status in ((TooLarge, 413), (NotFound, 404), (Conflict, 409), (InputError, 422)):
        if isinstance(err, cls):
            return status
    return 500


class AuthMiddleware:
    """Bearer token and API-version check before routing (pure ASGI: uploads keep streaming)."""

    def __init__(self, app, service: TrainingService):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        info = self.service.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if info is None:
            detail = "missing bearer token" if not token else "invalid or revoked token"
            return await JSONResponse({"detail": detail}, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        client_api = headers.get(API_HEADER)
        if client_api is not None and not api_compatible(client_api):
            return await JSONResponse({"detail": f"client API version {client_api[:20]} is not compatible with the server's "
                                                 f"{API_VERSION} (same major version needed); update the client or the server",
                                       "api_version": API_VERSION}, 400)(scope, receive, send)
        scope.setdefault("state", {})["token_id"] = info.id
        return await self.app(scope, receive, send)


def create_app(service: TrainingService, close_on_shutdown: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if close_on_shutdown:
            await run_in_threadpool(service.close)

    app = FastAPI(title="Malenia retraining server", version=API_VERSION, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  description=f"malenia {__version__}: upload corrections, fine-tune, download model versions.")
    app.add_middleware(AuthMiddleware, service=service)

    @app.exception_handler(MaleniaError)
    async def malenia_error(request: Request, err: MaleniaError):
        return JSONResponse({"detail": str(err)}, status_for(err))

    @app.get("/health", tags=["server"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "malenia_version": __version__, "api_version": API_VERSION}

    bearer = HTTPBearer(auto_error=False)  # documents the scheme in OpenAPI; AuthMiddleware enforces it
    api = APIRouter(dependencies=[Depends(bearer)])

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @api.get("/info", tags=["server"])
    def info() -> dict[str, Any]:
        return service.info()

    # -- cases
    upload_doc = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "lesions", "report"],
        "properties": {"image": {"type": "string", "format": "binary", "description": "CT, NIfTI (.nii.gz)"},
                       "lesions": {"type": "string", "format": "binary", "description": "instance labels 0..K, NIfTI"},
                       "report": {"type": "string", "format": "binary", "description": "malenia-case/1 report.json"},
                       "name": {"type": "string", "description": "display label (never a path)"}}}}}}}

    @api.post("/cases", tags=["cases"], status_code=201, openapi_extra=upload_doc,
              responses={200: {"description": "identical case already stored"}, 413: {"description": "too large"},
                         422: {"description": "refused, with the reason"}})
    async def upload_case(request: Request, response: Response) -> dict[str, Any]:
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
                staged = sink.finish()
            finally:
                sink.close()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        result = await run_in_threadpool(service.cases.ingest, staged)
        response.status_code = 200 if result.duplicate else 201
        return {"case": result.case, "duplicate": result.duplicate}

    @api.get("/cases", tags=["cases"])
    def list_cases() -> dict[str, Any]:
        return {"cases": service.cases.list()}

    @api.get("/cases/{case_id}", tags=["cases"])
    def get_case(case_id: str) -> dict[str, Any]:
        return service.cases.get(case_id)

    @api.delete("/cases/{case_id}", tags=["cases"], status_code=204)
    def delete_case(case_id: str) -> Response:
        service.cases.delete(case_id, service.jobs.active_case_ids())
        return Response(status_code=204)

    # -- jobs
    @api.post("/jobs", tags=["jobs"], status_code=202)
    def start_job(req: JobRequest) -> dict[str, Any]:
        return service.jobs.submit(req.model_dump())

    @api.get("/jobs", tags=["jobs"])
    def list_jobs() -> dict[str, Any]:
        return {"jobs": service.jobs.list()}

    @api.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        return service.jobs.get(job_id)

    @api.get("/jobs/{job_id}/log", tags=["jobs"], response_class=PlainTextResponse)
    def job_log(job_id: str, lines: int = Query(200, ge=1, le=10000)) -> str:
        return service.jobs.log_tail(job_id, lines)

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        return service.jobs.cancel(job_id)

    # -- model versions
    @api.get("/models", tags=["models"])
    def list_models() -> dict[str, Any]:
        return {"current": service.registry.current(), "versions": service.registry.list(),
                "history": service.registry.history()}

    @api.post("/models/rollback", tags=["models"])
    def rollback() -> dict[str, Any]:
        return service.registry.rollback()

    @api.get("/models/{version}", tags=["models"])
    def get_model(version: str) -> dict[str, Any]:
        return {**service.registry.get(version), "manifest": service.registry.manifest(version)}

    @api.get("/models/{version}/files/{path:path}", tags=["models"], response_class=FileResponse)
    def model_file(version: str, path: str) -> FileResponse:
        file, digest = service.registry.file_path(version, path)
        return FileResponse(file, headers={"X-Sha256": digest}, media_type="application/octet-stream")

    @api.post("/models/{version}/promote", tags=["models"])
    def promote(version: str, req: PromoteRequest | None = None) -> dict[str, Any]:
        return service.registry.promote(version, (req or PromoteRequest()).reason)

    app.include_router(api)
    return app
