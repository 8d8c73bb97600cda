"""The FastAPI application (``create_app``). Inference runs in a worker thread,
never on the event loop."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from model.predictor import Predictor
from model.pretrained import ModelLoadError
from serving.settings import Settings

log = logging.getLogger(__name__)


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, description="Texts to classify (not stored).")
    evidence: bool | None = Field(
        None, description="Attach supporting spans (default: the service setting)."
    )


class ClassifyResponse(BaseModel):
    model_version: str | None
    predictions: list[dict[str, Any]]


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.predictor = predictor
        app.state.model_error = None
        if predictor is None:
            try:
                app.state.predictor = await run_in_threadpool(
                    Predictor.load,
                    settings.model_dir,
                    batch_size=settings.batch_size,
                    max_tokens=settings.max_tokens,
                    num_threads=settings.threads,
                    evidence=settings.evidence,
                )
            except ModelLoadError as exc:
                # refuse readiness with the reason; never serve made-up labels
                app.state.model_error = str(exc)
                log.error("model failed to load: %s", exc)
        yield

    app = FastAPI(
        title="carelens",
        version="0.1.0",
        description="Triage of customer messages: issue type, sentiment and urgency.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz(request: Request) -> dict[str, Any]:
        """Ready when the model is loaded."""
        pred: Predictor | None = request.app.state.predictor
        if pred is None:
            raise HTTPException(
                503, detail={"ready": False, "reason": request.app.state.model_error}
            )
        return {
            "ready": True,
            "model_version": pred.model_version,
            "trained": bool(pred.model.train_config),
        }

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classify"])
    async def classify(body: ClassifyRequest, request: Request) -> ClassifyResponse:
        """Classify texts without storing them."""
        pred: Predictor | None = request.app.state.predictor
        if pred is None:
            raise HTTPException(503, detail=f"model not loaded: {request.app.state.model_error}")
        if len(body.texts) > settings.max_batch:
            raise HTTPException(
                413, detail=f"texts: {len(body.texts)} items, the limit is {settings.max_batch}"
            )
        for i, text in enumerate(body.texts):
            if len(text) > settings.max_text_chars:
                raise HTTPException(
                    413,
                    detail=f"texts[{i}]: {len(text)} characters, the limit is {settings.max_text_chars}",
                )
        try:
            results = await run_in_threadpool(pred.predict, body.texts, body.evidence)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        return ClassifyResponse(
            model_version=pred.model_version, predictions=[r.to_dict() for r in results]
        )

    return app
