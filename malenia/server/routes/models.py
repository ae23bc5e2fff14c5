"""/models: versions, their files (with sha256), promotion and rollback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from malenia.server.service import TrainingService


class PromoteRequest(BaseModel):
    reason: str = Field("promoted by hand", max_length=200)


def router(service: TrainingService) -> APIRouter:
    api = APIRouter(prefix="/models", tags=["models"])
    registry = service.registry

    @api.get("")
    def list_models() -> dict[str, Any]:
        return {"current": registry.current(), "versions": registry.list(), "history": registry.history()}

    @api.post("/rollback")
    def rollback() -> dict[str, Any]:
        return registry.rollback()

    @api.get("/{version}")
    def get_model(version: str) -> dict[str, Any]:
        return {**registry.get(version), "manifest": registry.manifest(version)}

    @api.get("/{version}/files/{path:path}", response_class=FileResponse)
    def model_file(version: str, path: str) -> FileResponse:
        file, digest = registry.file_path(version, path)
        return FileResponse(file, headers={"X-Sha256": digest}, media_type="application/octet-stream")

    @api.post("/{version}/promote")
    def promote(version: str, req: PromoteRequest | None = None) -> dict[str, Any]:
        return registry.promote(version, (req or PromoteRequest()).reason)

    return api
