"""The API's pydantic models: our requests are strict, the provider's responses are lenient."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from sweeper.api.models import (
    Checkpoint,
    CreateJobRequest,
    Event,
    Hyperparameters,
    Integration,
    Job,
    Method,
    Page,
    SupervisedMethod,
    WandbIntegration,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# finetune-api.md section 3: what Nebius answered to a create (S8/S9 outputs)
NEBIUS_CREATE_RESPONSE: dict[str, Any] = {
    "id": "ftjob-0123456789abcdef0123456789abcdef",
    "object": "fine_tuning.job",
    "created_at": 1733140000,
    "model": MODEL,
    "status": "running",
    "training_file": "file-123",
    "validation_file": "file-456",
    "hyperparameters": {
        "batch_size": 32,
        "learning_rate": 1e-05,
        "n_epochs": 5,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "packing": True,
        "max_grad_norm": 1.0,
        "context_length": 8192,
        "lora": True,
        "lora_r": 16,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
    },
    "integrations": [],
    "organization_id": "",
    "result_files": [],
    "seed": 42,
    "suffix": "",
    "trained_tokens": 0,
    "trained_steps": 0,
    "total_steps": None,
    "estimated_finish": None,
    "error": None,
    "finished_at": None,
}

OPENAI_JOB: dict[str, Any] = {
    "object": "fine_tuning.job",
    "id": "ftjob-abc123",
    "model": "gpt-4o-mini-2024-07-18",
    "created_at": 1721764800,
    "finished_at": 1721764900,
    "fine_tuned_model": "ft:gpt-4o-mini:my-org:custom_suffix:id",
    "organization_id": "org-123",
    "result_files": ["file-abc123"],
    "status": "succeeded",
    "validation_file": None,
    "training_file": "file-abc123",
    "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": 3},
    "trained_tokens": 5768,
    "integrations": [],
    "seed": 0,
    "estimated_finish": 0,
    "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
    "metadata": {"sweep": "llama", "trial": "3"},
    "user_provided_suffix": "custom_suffix",
}


@pytest.mark.parametrize("name", ["learning_rate_multiplier", "lora_rank", "epochs"])
def test_hyperparameters_reject_unknown_names(name: str) -> None:
    """Names Nebius would silently ignore (learning_rate_multiplier, lora_rank) are refused."""
    with pytest.raises(ValidationError) as info:
        Hyperparameters.model_validate({name: 2})
    assert info.value.errors()[0]["loc"] == (name,)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 65),
        ("n_epochs", 0),
        ("n_epochs", 21),
        ("context_length", 4096),
        ("context_length", 131073),
        ("lora_r", 4),
        ("lora_r", 129),
        ("lora_alpha", 4),
        ("lora_dropout", 1.5),
        ("lora_dropout", -0.1),
        ("warmup_ratio", 1.1),
        ("learning_rate", -1.0),
        ("weight_decay", -0.5),
        ("max_grad_norm", 0.0),
        ("batch_size", 8.5),
        ("lora", "yes"),
    ],
)
def test_hyperparameters_reject_out_of_range_values(name: str, value: object) -> None:
    """Values outside Nebius's documented ranges (or of the wrong type) are refused."""
    with pytest.raises(ValidationError) as info:
        Hyperparameters.model_validate({name: value})
    assert info.value.errors()[0]["loc"] == (name,)


def test_hyperparameters_accept_the_range_edges() -> None:
    """The documented bounds themselves are valid."""
    low = Hyperparameters(
        batch_size=1, n_epochs=1, context_length=8192, lora_r=8, lora_alpha=8, lora_dropout=0.0,
        learning_rate=0.0, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1e-9,
    )  # fmt: skip
    high = Hyperparameters(
        batch_size=64, n_epochs=20, context_length=131072, lora_r=128, lora_dropout=1.0,
        warmup_ratio=1.0,
    )  # fmt: skip
    assert low.batch_size == 1 and high.context_length == 131072


def test_suffix_longer_than_64_is_refused() -> None:
    """suffix is at most 64 characters."""
    CreateJobRequest(model=MODEL, training_file="file-1", suffix="x" * 64)
    with pytest.raises(ValidationError):
        CreateJobRequest(model=MODEL, training_file="file-1", suffix="x" * 65)


def test_create_request_refuses_unknown_fields() -> None:
    """A typo in a request field is an error, not a silently dropped key."""
    with pytest.raises(ValidationError):
        CreateJobRequest.model_validate({"model": MODEL, "training_file": "f", "sufix": "s"})


def test_payload_reveals_wandb_key_only_there() -> None:
    """to_payload() carries the W&B key; repr and a plain dump mask it."""
    request = CreateJobRequest(
        model=MODEL,
        training_file="file-1",
        hyperparameters=Hyperparameters(lora=True, lora_r=16, learning_rate=1e-4),
        integrations=[
            Integration(wandb=WandbIntegration(project="p", api_key=SecretStr("wb-SECRET-1")))
        ],
        tags=["sweep", "trial-1"],
        suffix="s-1",
    )
    payload = request.to_payload()
    assert payload["integrations"] == [
        {"type": "wandb", "wandb": {"project": "p", "api_key": "wb-SECRET-1"}}
    ]
    assert payload["hyperparameters"] == {"lora": True, "lora_r": 16, "learning_rate": 1e-4}
    assert "validation_file" not in payload  # None fields are not sent
    assert "wb-SECRET-1" not in repr(request)
    assert "wb-SECRET-1" not in str(request.model_dump(mode="json"))


def test_method_payload_shape() -> None:
    """The supervised method nests its hyperparameters as the spec says."""
    request = CreateJobRequest(
        model=MODEL,
        training_file="f",
        method=Method(supervised=SupervisedMethod(hyperparameters=Hyperparameters(n_epochs=2))),
    )
    assert request.to_payload()["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2}},
    }


def test_job_parses_the_nebius_create_response() -> None:
    """Nebius's create answer (running, suffix '', organization_id '', trained_tokens 0) parses."""
    job = Job.model_validate(NEBIUS_CREATE_RESPONSE)
    assert job.status == "running" and not job.is_terminal
    assert job.suffix == "" and job.organization_id == "" and job.trained_tokens == 0
    assert job.total_steps is None and job.seed == 42
    assert job.hyperparameters is not None and job.hyperparameters.lora_r == 16
    assert job.fine_tuned_model is None and job.metadata is None


def test_job_parses_an_openai_job() -> None:
    """An OpenAI job (fine_tuned_model, metadata, "auto" hyperparameters) parses."""
    job = Job.model_validate(OPENAI_JOB)
    assert job.is_terminal
    assert job.fine_tuned_model == "ft:gpt-4o-mini:my-org:custom_suffix:id"
    assert job.metadata == {"sweep": "llama", "trial": "3"}
    assert job.user_provided_suffix == "custom_suffix" and job.suffix is None
    assert job.hyperparameters is not None
    assert job.hyperparameters.batch_size == "auto"
    assert job.hyperparameters.learning_rate_multiplier == "auto"
    assert job.hyperparameters.n_epochs == 3


def test_job_needs_only_the_required_fields() -> None:
    """id, created_at, model, status and training_file suffice; unknown fields are ignored."""
    job = Job.model_validate(
        {"id": "j", "created_at": 1, "model": "m", "status": "queued", "training_file": "f",
         "brand_new": [1, 2]}
    )  # fmt: skip
    assert job.result_files == [] and job.error is None
    with pytest.raises(ValidationError):
        Job.model_validate({"id": "j", "created_at": 1, "model": "m", "status": "queued"})


def test_checkpoint_and_event_parse_with_or_without_optional_fields() -> None:
    """A Nebius checkpoint list item (result_files, extra metric keys) and an OpenAI one parse."""
    nebius = Checkpoint.model_validate(
        {
            "id": "ftckpt_1",
            "created_at": 1,
            "fine_tuning_job_id": "ftjob-1",
            "step_number": 10,
            "fine_tuned_model_checkpoint": "x",
            "metrics": {"train_loss": 1.5, "valid_loss": None, "full_valid_loss": 1.4, "new": 3},
            "result_files": ["file-a", "file-b"],
        }
    )
    assert nebius.metrics.train_loss == 1.5 and nebius.metrics.valid_loss is None
    openai = Checkpoint.model_validate(
        {"id": "ftckpt_2", "created_at": 2, "fine_tuning_job_id": "j", "step_number": 20,
         "metrics": {"step": 20, "train_loss": 0.5}}
    )  # fmt: skip
    assert openai.result_files == []
    event = Event.model_validate(
        {"id": "ev", "created_at": 3, "level": "info", "message": "Job is submitted",
         "type": "metrics", "data": {"step": 1}}
    )  # fmt: skip
    assert event.data == {"step": 1}


def test_page_parses_with_and_without_has_more() -> None:
    """A list page parses with has_more/first_id/last_id or with data only (Nebius files)."""
    page = Page[Event].model_validate(
        {"object": "list", "data": [{"id": "e", "created_at": 1}], "has_more": False}
    )
    assert page.has_more is False and page.data[0].message == ""
    assert Page[Event].model_validate({"data": []}).has_more is None


def test_float_times_and_counts_from_a_provider_are_read() -> None:
    """Unix times and counts sent as floats are accepted (seconds kept), not a protocol error."""
    job = Job.model_validate(
        {"id": "ftjob-1", "created_at": 1732000000.75, "model": "m", "status": "running",
         "training_file": "file-1", "trained_tokens": 1200.0, "finished_at": None}
    )  # fmt: skip
    assert job.created_at == 1732000000 and job.trained_tokens == 1200


def test_explicit_nulls_from_a_provider_mean_none() -> None:
    """null metrics, result_files, level or message parse as empty, not as a protocol error."""
    ck = Checkpoint.model_validate(
        {"id": "ftckpt_1", "created_at": 1, "fine_tuning_job_id": "ftjob-1", "step_number": 3,
         "metrics": None, "result_files": None}
    )  # fmt: skip
    assert ck.metrics.valid_loss is None and ck.result_files == []
    ev = Event.model_validate({"id": "e", "created_at": 1, "level": None, "message": None})
    assert ev.message == "" and ev.level == ""
    job = Job.model_validate(
        {"id": "ftjob-1", "created_at": 1, "model": "m", "status": "queued",
         "training_file": "file-1", "result_files": None}
    )  # fmt: skip
    assert job.result_files == []
