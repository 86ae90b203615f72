"""The HTTP API of the local service: Nebius's files and fine-tuning routes (finetune-api.md 1-5).

Requests are validated the way the provider does it: a pydantic body with the documented ranges
gives FastAPI's 422 ``{"detail": [{loc, msg, type}]}``; unknown hyperparameter names are accepted
and ignored (``extra="allow"``, as Nebius's schema has ``additionalProperties: true``); other
errors are ``{"detail": "text"}``. Secrets in integrations are write-only: they are dropped
before anything is stored, so they are never echoed nor written to disk.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sweeper.local import catalog
from sweeper.local.runner import ACTIVE, Runner, event
from sweeper.local.state import Obj, State

SECRET_KEYS = frozenset({"api_key", "password", "api_token", "token", "secret"})
FILE_PURPOSES = ("fine-tune", "batch")


class SupervisedHParameters(BaseModel):
    """Nebius ``SupervisedHParameters``: documented ranges, Nebius defaults, extra names ignored."""

    model_config = ConfigDict(extra="allow")

    batch_size: int = Field(8, ge=1, le=64)
    learning_rate: float = Field(1e-5, ge=0)
    n_epochs: int = Field(3, ge=1, le=20)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    packing: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    context_length: int = Field(8192, ge=8192, le=131072)
    lora: bool = False
    lora_r: int = Field(8, ge=8, le=128)
    lora_alpha: int = Field(8, ge=8)
    lora_dropout: float = Field(0.0, ge=0, le=1)

    def known(self) -> dict[str, Any]:
        """The documented fields only, defaults filled (what the job echoes)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


class Supervised(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: SupervisedHParameters | None = None


class MethodBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["supervised"]
    supervised: Supervised | None = None


class IntegrationBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["wandb", "mlflow", "hf"]


class CreateJobBody(BaseModel):
    """Nebius ``FineTuningRequest``."""

    model_config = ConfigDict(extra="allow")

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: SupervisedHParameters | None = None
    method: MethodBody | None = None
    integrations: list[IntegrationBody] | None = None
    seed: int | None = None
    suffix: str | None = Field(None, max_length=64)
    tags: list[str] | None = None
    extra_body: dict[str, Any] | None = None
    from_checkpoint: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if catalog.lookup(value) is None:
            raise ValueError(
                f"model '{value}' is not available for fine-tuning; GET /v1/models lists them"
            )
        return value


def _scrub(value: Any) -> Any:
    """Drop write-only secrets at any depth."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def _page(items: list[Obj], limit: int, **extra: Any) -> dict[str, Any]:
    data = items[:limit]
    return {"object": "list", "data": data, "has_more": len(items) > limit, **extra}


def create_app(state: State, runner: Runner) -> FastAPI:
    """The FastAPI application; auth, faults and counters wrap it (``sweeper.local.faults``)."""
    app = FastAPI(title="sweeper local fine-tuning service", docs_url=None, redoc_url=None)

    def job_or_404(job_id: str) -> Obj:
        job = state.job(job_id)
        if job is None:
            raise HTTPException(404, f"Fine-tuning job {job_id} not found")
        return job

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        data = [
            {"id": m.name, "object": "model", "created": 0, "owned_by": "sweeper-local",
             "local_model": m.local_name, "d_embed": m.d_embed, "d_hidden": m.d_hidden}
            for m in catalog.MODELS.values()
        ]  # fmt: skip
        return {"object": "list", "data": data}

    # --- files --------------------------------------------------------------------------------

    @app.post("/v1/files")
    def upload_file(
        file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
    ) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise RequestValidationError(
                [{"type": "enum", "loc": ("body", "purpose"), "input": purpose,
                  "msg": f"Input should be {' or '.join(repr(p) for p in FILE_PURPOSES)}"}]
            )  # fmt: skip
        content = file.file.read()
        obj = {
            "id": f"file-{uuid.uuid4().hex}",
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": file.filename or "upload.jsonl",
            "purpose": purpose,
            "status": "processed",
        }
        state.add_file(obj, content)
        return obj

    @app.get("/v1/files")
    def list_files(
        purpose: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 10,
    ) -> dict[str, Any]:
        # Nebius documents no has_more here; `after` still works, so SDK auto-paging ends.
        return {"object": "list", "data": state.files(purpose, after, limit)}

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> Obj:
        obj = state.file(file_id)
        if obj is None:
            raise HTTPException(404, f"File {file_id} not found")
        return obj

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> Response:
        content = state.file_content(file_id)
        if content is None:
            raise HTTPException(404, f"File {file_id} not found")
        return Response(content, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        if not state.delete_file(file_id):
            raise HTTPException(404, f"File {file_id} not found")
        return {"id": file_id, "object": "file", "deleted": True}

    # --- jobs ---------------------------------------------------------------------------------

    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: CreateJobBody) -> Obj:
        supervised = body.method.supervised if body.method else None
        if body.hyperparameters is not None and supervised and supervised.hyperparameters:
            raise _invalid(
                "method", "Only one of 'method' or 'hyperparameters' must be provided", None
            )
        hp = body.hyperparameters or (supervised.hyperparameters if supervised else None)
        known = (hp or SupervisedHParameters()).known()
        for field in ("training_file", "validation_file"):
            file_id = getattr(body, field)
            if file_id is not None and state.file(file_id) is None:
                raise _invalid(field, f"file '{file_id}' does not exist", file_id)
        job: Obj = {
            "id": f"ftjob-{uuid.uuid4().hex}",
            "object": "fine_tuning.job",
            "created_at": int(time.time()),
            "model": body.model,
            "status": "validating_files",
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "hyperparameters": known,
            "method": {"type": "supervised", "supervised": {"hyperparameters": known}},
            "integrations": _scrub([i.model_dump() for i in body.integrations or []]),
            "from_checkpoint": _scrub(body.from_checkpoint),
            "organization_id": "",
            "result_files": [],
            "seed": body.seed if body.seed is not None else 0,
            "suffix": body.suffix or "",
            "trained_tokens": 0,
            "trained_steps": 0,
            "total_steps": None,
            "estimated_finish": None,
            "error": None,
            "finished_at": None,
        }
        state.add_job(job, event("Job is submitted"))
        runner.submit(job["id"])
        return job

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(
        after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> dict[str, Any]:
        return _page(state.jobs(after, limit + 1), limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str) -> Obj:
        return job_or_404(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> Obj:
        job = job_or_404(job_id)
        if job["status"] in ("succeeded", "failed"):
            raise HTTPException(400, f"Job {job_id} has already {job['status']}")

        def change(j: Obj) -> Obj | None:
            if j["status"] not in ACTIVE:
                return None
            j.update(status="cancelled", finished_at=int(time.time()), estimated_finish=None)
            return j

        done = state.update_job(job_id, change, events=[event("Job was cancelled by the user")])
        runner.cancel(job_id)
        return done or job_or_404(job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
    ) -> dict[str, Any]:
        job_or_404(job_id)
        return _page(state.events(job_id, after, limit + 1), limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> dict[str, Any]:
        job_or_404(job_id)
        items = state.checkpoints(job_id, after, limit + 1)
        data = items[:limit]
        return _page(
            items,
            limit,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
        )

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}")
    def retrieve_checkpoint(job_id: str, checkpoint_id: str) -> Obj:
        job_or_404(job_id)
        ckpt = state.checkpoint(job_id, checkpoint_id)
        if ckpt is None:
            raise HTTPException(404, f"Checkpoint {checkpoint_id} not found")
        ckpt.pop("result_files", None)  # the single-checkpoint schema has none (spec s. 1)
        return ckpt

    return app
