"""Admin: the model registry (versions, promotion, rollback) and retraining jobs."""

from __future__ import annotations

import json
from typing import Any, Literal, get_type_hints

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, create_model

from model.registry import RegistryError
from model.settings import BOUNDS, RetrainConfig
from serving.corrections import export_labels
from serving.deps import AdminKey, Svc
from serving.errors import ApiRoute
from serving.model_versions import JobConflict, JobRunner, LoadFailed, ModelManager

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ApiRoute)
NO_REGISTRY: dict = {409: {"description": "The service does not follow a registry."}}
REFUSED: dict = {
    409: {
        "description": "No registry, a job already running, nothing to train on, or a "
        "version that fails to load (the current one keeps serving)."
    }
}


def _models(request: Request) -> ModelManager:
    return request.app.state.models


def _jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


def _registry(models: ModelManager):
    if models.registry is None:
        raise HTTPException(
            409, detail="the service does not follow a registry (set CARELENS_FOLLOW_REGISTRY=true)"
        )
    return models.registry


def _retrain_in() -> type[BaseModel]:
    """The request body of ``POST /v1/models/retrain``: the settings of
    ``model.settings.RetrainConfig`` an admin may set for one run, each optional, with
    the declaration's bounds and help."""
    hints = get_type_hints(RetrainConfig)
    fields: dict[str, Any] = {
        f.name: (
            hints[f.name] | None,
            Field(
                None,
                description=f"{f.metadata['help']} Default {json.dumps(f.default)}.",
                **{k: f.metadata[k] for k in BOUNDS if k in f.metadata},
            ),
        )
        for f in RetrainConfig.per_run()
    }
    return create_model(
        "RetrainIn",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Settings for this run (the rest: the defaults of ``carelens retrain``). "
        "An unknown key is refused (422), never silently ignored.",
        **fields,
    )


RetrainIn = _retrain_in()


class VersionSummary(BaseModel):
    version: str
    active: bool
    status: str = Field(description="imported, candidate, promoted or rejected.")
    created_at: str | None
    parent: str | None = Field(description="The version it was fine-tuned from.")
    decision: str | None = Field(
        description="The gate's decision: promoted, passed (not promoted) or rejected."
    )
    reason: str | None
    frozen_mean: float | None = Field(
        description="Mean figure over the (source, task) cells of the frozen set."
    )
    new_tickets_mean: float | None = Field(
        description="Mean figure on the newest labelled tickets held out of its training."
    )


class ModelsOut(BaseModel):
    serving: str | None = Field(description="The model version answering now.")
    loaded_at: str | None
    error: str | None = Field(description="The last reload or registry error, if any.")
    failed_version: str | None
    switches: list[dict[str, Any]] = Field(
        description="The last model switches: at, from, to, reason."
    )
    registry: str | None = Field(description="The registry folder (None: no registry).")
    active: str | None
    rollback_to: str | None = None
    versions: list[VersionSummary] = Field(description="Oldest first.")


class ModelVersionOut(BaseModel):
    """A version's record (``version.json``): metrics, training-data summary, parent,
    gate decision; further fields as the training run wrote them."""

    model_config = ConfigDict(extra="allow")

    version: str
    created_at: str | None = None
    status: str | None = None
    parent: str | None = None
    gate: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    active: bool


class Switched(BaseModel):
    active: str = Field(description="The active version now.")
    serving: str | None = Field(description="The version answering now.")


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["running", "succeeded", "failed", "lost"] = Field(
        description="lost: the service restarted while it ran."
    )
    pid: int
    started_at: str
    finished_at: str | None
    returncode: int | None
    by: str = Field(description="Who started it.")
    options: dict[str, Any] = Field(description="The settings given for this run.")
    labelled_tickets: int
    progress: dict[str, Any] | None = Field(
        None, description="stage, fraction (0-1) and message, while it runs."
    )
    result: dict[str, Any] | None = Field(
        None,
        description="Once finished: version, decision, reason, active (and, for one job, "
        "both sets of metrics).",
    )
    log_tail: list[str] | None = Field(None, description="The log's last lines (one job).")


@router.get("")
def list_models(request: Request, svc: Svc, _: AdminKey) -> ModelsOut:
    """The versions (newest last), the active one, what is served and any reload error."""
    models = _models(request)
    out: dict[str, Any] = {**models.status(), "registry": None, "active": None, "versions": []}
    if models.registry is not None:
        reg = models.registry
        try:
            active = reg.active()
            out.update(
                registry=str(reg.root),
                active=active,
                rollback_to=reg.rollback_target(),
                versions=[v.summary(active) for v in reg.versions()],
            )
        except RegistryError as exc:
            out["error"] = str(exc)
    return ModelsOut(**out)


@router.get("/jobs")
def list_jobs(request: Request, _: AdminKey) -> list[JobOut]:
    """Retraining jobs, newest first."""
    return _jobs(request).list()


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, _: AdminKey) -> JobOut:
    """A retraining job: status, progress (stage, fraction), the log's tail and, once
    finished, its result (version, gate decision and reason, both sets of metrics)."""
    try:
        return _jobs(request).get(job_id)
    except KeyError:
        raise HTTPException(
            404, detail=f"no job {job_id!r} (GET /v1/models/jobs lists them)"
        ) from None


@router.post("/retrain", status_code=202, responses=REFUSED)
def retrain(
    body: RetrainIn,
    request: Request,
    svc: Svc,
    who: AdminKey,
) -> JobOut:
    """Start retraining as a background job on the agents' labelled tickets (exported
    now); poll ``GET /v1/models/jobs/{id}``. A promoted candidate is served as soon as
    the job ends."""
    models = _models(request)
    reg = _registry(models)
    predictor = svc.require_predictor()
    with svc.sessions() as s:
        labels = export_labels(s, predictor.taxonomy, "jsonl")
    if not labels.strip():
        raise HTTPException(
            409,
            detail="no labelled tickets yet: agents label tickets with POST /v1/tickets/{id}/labels",
        )
    options = {k: v for k, v in body.model_dump().items() if v is not None}
    base = None if reg.active() else svc.settings.model_dir
    try:
        return _jobs(request).start_retrain(labels, options, who.actor, base=base)
    except JobConflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@router.post("/rollback", responses=REFUSED)
async def rollback(request: Request, who: AdminKey) -> Switched:
    """Serve the previously active version again (loaded before the switch)."""
    models = _models(request)
    _registry(models)
    try:
        ptr = await run_in_threadpool(models.rollback, who.actor)
    except RegistryError as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    except LoadFailed as exc:
        raise HTTPException(409, detail=f"{exc}; still serving {models.serving}") from exc
    return {"active": ptr["version"], "serving": models.serving}


@router.get("/{version}", responses=NO_REGISTRY)
def show_model(version: str, request: Request, _: AdminKey) -> ModelVersionOut:
    """One version's record: metrics, training-data summary, parent, gate decision."""
    reg = _registry(_models(request))
    try:
        v = reg.get(version)
    except RegistryError as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return {**v.info, "active": v.name == reg.active()}


@router.post("/{version}/promote", responses=REFUSED)
async def promote(version: str, request: Request, who: AdminKey) -> Switched:
    """Make ``version`` active and serve it. It is loaded first: a version that fails
    to load is refused (409) and the current one keeps serving."""
    models = _models(request)
    reg = _registry(models)
    try:
        reg.get(version)
    except RegistryError as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    try:
        ptr = await run_in_threadpool(models.promote, version, who.actor)
    except LoadFailed as exc:
        raise HTTPException(409, detail=f"{exc}; still serving {models.serving}") from exc
    return {"active": ptr["version"], "serving": models.serving}
