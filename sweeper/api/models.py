"""Typed models of the fine-tuning API (Nebius Token Factory, OpenAI-compatible).

Requests are ours: they forbid unknown fields and check the documented Nebius ranges
(finetune-api.md section 2), because Nebius accepts unknown hyperparameter names and silently
ignores them. Responses are the provider's: they ignore unknown fields, since providers add
fields, and every OpenAI-only field is optional.

Secrets (the W&B ``api_key``) are ``SecretStr``: they print as ``**********`` and reach the
wire only through :meth:`CreateJobRequest.to_payload`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
)

# --- job status -------------------------------------------------------------------------------

VALIDATING_FILES = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

ACTIVE_STATUSES = frozenset({VALIDATING_FILES, QUEUED, RUNNING})
TERMINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED})

# The documented Nebius ranges of SupervisedHParameters: name -> (type, low, high); None = open.
HYPERPARAMETER_RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "batch_size": (int, 1, 64),
    "learning_rate": (float, 0.0, None),
    "n_epochs": (int, 1, 20),
    "warmup_ratio": (float, 0.0, 1.0),
    "weight_decay": (float, 0.0, None),
    "packing": (bool, None, None),
    "max_grad_norm": (float, 0.0, None),  # exclusive low: > 0
    "context_length": (int, 8192, 131072),
    "lora": (bool, None, None),
    "lora_r": (int, 8, 128),
    "lora_alpha": (int, 8, None),
    "lora_dropout": (float, 0.0, 1.0),
}
EXCLUSIVE_LOW = frozenset({"max_grad_norm", "learning_rate_multiplier"})

# OpenAI's supervised hyperparameters (finetune-api.md section 12); "auto" is left to the
# provider by not sending the field.
OPENAI_HYPERPARAMETER_RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "batch_size": (int, 1, 256),
    "learning_rate_multiplier": (float, 0.0, None),  # exclusive low: > 0
    "n_epochs": (int, 1, 50),
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _whole(value: Any) -> Any:
    """Providers may send unix times and counts as floats (1732000000.25): keep the seconds."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return value


# an int field that also takes a float from the wire, truncated
WholeNumber = Annotated[int, BeforeValidator(_whole)]


def _null_is_empty(value: Any) -> Any:
    """A provider's explicit null for a list, an object or a text means "none"."""
    return {} if value is None else value


def _null_list(value: Any) -> Any:
    return [] if value is None else value


def _null_text(value: Any) -> Any:
    return "" if value is None else value


FileIds = Annotated[list[str], BeforeValidator(_null_list)]
Text = Annotated[str, BeforeValidator(_null_text)]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- create request ---------------------------------------------------------------------------


class Hyperparameters(_Request):
    """Nebius ``SupervisedHParameters``; unknown names are refused (Nebius would ignore them)."""

    batch_size: int | None = Field(default=None, ge=1, le=64)
    learning_rate: float | None = Field(default=None, ge=0)
    n_epochs: int | None = Field(default=None, ge=1, le=20)
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)
    weight_decay: float | None = Field(default=None, ge=0)
    packing: bool | None = None
    max_grad_norm: float | None = Field(default=None, gt=0)
    context_length: int | None = Field(default=None, ge=8192, le=131072)
    lora: bool | None = None
    lora_r: int | None = Field(default=None, ge=8, le=128)
    lora_alpha: int | None = Field(default=None, ge=8)
    lora_dropout: float | None = Field(default=None, ge=0, le=1)


class OpenAIHyperparameters(_Request):
    """OpenAI's ``hyperparameters`` (no Nebius knobs; unknown names refused)."""

    batch_size: int | None = Field(default=None, ge=1, le=256)
    learning_rate_multiplier: float | None = Field(default=None, gt=0)
    n_epochs: int | None = Field(default=None, ge=1, le=50)


class SupervisedMethod(_Request):
    hyperparameters: Hyperparameters | None = None


class Method(_Request):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


def _reveal(value: SecretStr | None, info: SerializationInfo) -> str | None:
    if value is None:
        return None
    ctx = info.context or {}
    return value.get_secret_value() if ctx.get("reveal_secrets") else str(value)


class WandbIntegration(_Request):
    project: str
    api_key: SecretStr | None = None  # write-only; Nebius requires it, OpenAI does not take it
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None

    @field_serializer("api_key")
    def _api_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return _reveal(value, info)


class Integration(_Request):
    type: Literal["wandb"] = "wandb"
    wandb: WandbIntegration


class CreateJobRequest(_Request):
    """Body of ``POST /v1/fine_tuning/jobs`` (every field the spec documents)."""

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: Hyperparameters | OpenAIHyperparameters | None = None
    method: Method | None = None
    integrations: list[Integration] | None = None
    seed: int | None = None
    suffix: str | None = Field(default=None, max_length=64)
    tags: list[str] | None = None
    extra_body: dict[str, Any] | None = None
    from_checkpoint: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)  # OpenAI only

    def to_payload(self) -> dict[str, Any]:
        """The JSON body, secrets included: only the HTTP client calls this."""
        return self.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})


# --- responses --------------------------------------------------------------------------------


class JobError(_Response):
    code: str | None = None
    message: str | None = None
    param: str | None = None


class JobHyperparameters(_Response):
    """What the provider echoes; OpenAI may answer ``"auto"`` where Nebius has numbers."""

    model_config = ConfigDict(extra="allow")

    batch_size: int | str | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | str | None = None
    n_epochs: int | str | None = None
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    packing: bool | None = None
    max_grad_norm: float | None = None
    context_length: int | None = None
    lora: bool | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None


class Job(_Response):
    """Nebius ``FineTuningJob`` (OpenAI's fields optional)."""

    id: str
    created_at: WholeNumber
    model: str
    status: str
    training_file: str
    object: str = "fine_tuning.job"
    error: JobError | None = None
    finished_at: WholeNumber | None = None
    hyperparameters: JobHyperparameters | None = None
    method: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None
    from_checkpoint: dict[str, Any] | None = None
    organization_id: str | None = ""
    result_files: FileIds = Field(default_factory=list)
    seed: int | None = None
    suffix: str | None = None
    trained_tokens: WholeNumber | None = None
    validation_file: str | None = None
    estimated_finish: WholeNumber | None = None
    trained_steps: WholeNumber | None = None
    total_steps: WholeNumber | None = None
    # OpenAI only
    fine_tuned_model: str | None = None
    user_provided_suffix: str | None = None  # OpenAI echoes the suffix here, not in `suffix`
    metadata: dict[str, str] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Event(_Response):
    id: str
    created_at: WholeNumber
    level: Text = "info"
    message: Text = ""
    object: str = "fine_tuning.job.event"
    data: Any = None
    type: str | None = None


class CheckpointMetrics(_Response):
    model_config = ConfigDict(extra="allow")

    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class Checkpoint(_Response):
    id: str
    created_at: WholeNumber
    fine_tuning_job_id: str
    step_number: WholeNumber
    metrics: Annotated[CheckpointMetrics, BeforeValidator(_null_is_empty)] = Field(
        default_factory=CheckpointMetrics
    )
    fine_tuned_model_checkpoint: str | None = None
    object: str = "fine_tuning.job.checkpoint"
    result_files: FileIds = Field(default_factory=list)  # Nebius list items only


class FileObject(_Response):
    id: str
    object: str = "file"
    bytes: WholeNumber | None = None
    created_at: WholeNumber | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None


class FileDeleted(_Response):
    id: str
    object: str = "file"
    deleted: bool


T = TypeVar("T")


class Page(_Response, Generic[T]):
    """``{object: "list", data, has_more}``; ``has_more`` may be absent (Nebius files)."""

    object: str = "list"
    data: list[T]
    has_more: bool | None = None
    first_id: str | None = None
    last_id: str | None = None
