"""The HTTP API (FastAPI) over a TrainingService.

Every path except GET /health needs `Authorization: Bearer <token>`; the check is an ASGI
middleware in front of routing, so it also covers unknown paths and runs before any body is read.
A client that sends `X-Malenia-Api` with another major version gets 400 with both versions.
The OpenAPI schema is served at /openapi.json (behind the token like everything else).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers

from malenia import __version__
from malenia.errors import InputError, MaleniaError
from malenia.server import API_HEADER, API_VERSION, api_compatible
from malenia.server.cases import Conflict, NotFound
from malenia.server.routes import cases, jobs, models
from malenia.server.service import TrainingService
from malenia.server.uploads import TooLarge

PUBLIC_PATHS = {"/health"}


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
    app.add_exception_handler(MaleniaError, _malenia_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(OSError, _storage_error)

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

    for resource in (cases, jobs, models):
        api.include_router(resource.router(service))
    app.include_router(api)
    return app


async def _malenia_error(request: Request, err: MaleniaError) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status_for(err))


async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
    """422 with where and why; the offending input is not echoed (NaN or 1e400 are not JSON: that was a 500)."""
    errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200], "type": str(e.get("type", ""))}
              for e in err.errors()]
    return JSONResponse({"detail": errors}, 422)


async def _storage_error(request: Request, err: OSError) -> JSONResponse:
    """A full disk or a file-size limit is the server's storage, not a bug: 507 with the reason (what was staged is
    removed on the way out); any other OSError stays a 500."""
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return JSONResponse({"detail": f"the server's storage is full ({os.strerror(err.errno)}); nothing was kept"}, 507)
    logging.getLogger("malenia.server").error("unexpected OSError", exc_info=err)
    return JSONResponse({"detail": "internal server error"}, 500)


class QuerylessAccessLog(logging.Filter):
    """uvicorn's access log without query strings: a `?token=...` must never reach a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True
