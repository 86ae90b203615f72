"""ApiClient against the real local service over loopback HTTP (sweeper.local.embedded)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from sweeper.api.client import ApiClient
from sweeper.api.models import CreateJobRequest, Hyperparameters, Job
from sweeper.errors import ApiAuthError, ApiNotFound, ApiRejected
from sweeper.local.embedded import EmbeddedService, start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.local.sample_data import write_quickstart

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(autouse=True, scope="module")
def _instant_retries() -> Iterator[None]:
    """Retries without waiting; enough attempts to ride out the injected faults."""
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_quickstart(folder, n_train=40, n_valid=10)
    return folder


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    with start_embedded(tmp_path_factory.mktemp("svc"), max_running=2) as svc:
        yield svc


@pytest.fixture
def client(service: EmbeddedService) -> Iterator[ApiClient]:
    with ApiClient(service.base_url, service.api_key, timeout=30.0) as c:
        yield c


def wait_terminal(client: ApiClient, job_id: str, timeout: float = 120.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = client.retrieve_job(job_id)
        if job.is_terminal or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_upload_train_and_read_back(client: ApiClient, data: Path) -> None:
    """Upload, create, poll to success, then events oldest first and checkpoints by step."""
    train = client.upload_file(data / "train.jsonl")
    valid = client.upload_file(data / "valid.jsonl")
    assert train.filename == "train.jsonl" and train.purpose == "fine-tune"
    assert client.retrieve_file(train.id).bytes == (data / "train.jsonl").stat().st_size
    assert train.id in {f.id for f in client.list_files(purpose="fine-tune")}

    request = CreateJobRequest(
        model=MODEL,
        training_file=train.id,
        validation_file=valid.id,
        hyperparameters=Hyperparameters(n_epochs=2, batch_size=8, learning_rate=1e-3, lora=True),
        suffix="roundtrip-ok",
        seed=7,
    )
    created = client.create_job(request)
    assert created.suffix == "roundtrip-ok" and created.status in {
        "validating_files",
        "queued",
        "running",
    }
    job = wait_terminal(client, created.id)
    assert job.status == "succeeded", job.error
    assert job.trained_tokens and job.trained_tokens > 0

    events = client.list_events(job.id)
    assert events[0].message == "Job is submitted"
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    checkpoints = client.list_checkpoints(job.id)
    assert len(checkpoints) == 2  # one per epoch
    assert [c.step_number for c in checkpoints] == sorted(c.step_number for c in checkpoints)
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    assert client.find_job_by_suffix("roundtrip-ok") == job
    assert client.delete_file(valid.id).deleted is True


def test_cancel_a_running_job(tmp_path: Path, data: Path) -> None:
    """cancel_job stops a job in flight; it ends cancelled."""
    slow = FaultConfig(step_delay=0.2)
    with (
        start_embedded(tmp_path / "svc", faults=slow) as svc,
        ApiClient(svc.base_url, svc.api_key) as client,
    ):
        train = client.upload_file(data / "train.jsonl")
        job = client.create_job(
            CreateJobRequest(model=MODEL, training_file=train.id, suffix="to-cancel")
        )
        cancelled = client.cancel_job(job.id)
        assert cancelled.status == "cancelled"
        assert wait_terminal(client, job.id).status == "cancelled"


def test_missing_job_is_not_found(client: ApiClient) -> None:
    """A 404 from the service is ApiNotFound with its detail text."""
    with pytest.raises(ApiNotFound, match="ftjob-nope"):
        client.retrieve_job("ftjob-nope")


def test_validation_error_is_rendered_per_field(client: ApiClient) -> None:
    """The service's FastAPI 422 becomes ApiRejected with one `field: message` line each."""
    request = CreateJobRequest(model="no/such-model", training_file="file-missing", suffix="x")
    with pytest.raises(ApiRejected) as info:
        client.create_job(request)
    error = info.value
    assert error.status_code == 422
    assert len(error.problems) >= 1
    assert error.problems[0].startswith("model: ")
    assert "no/such-model" in error.problems[0]
    assert client.stats["POST /fine_tuning/jobs"] == 1


def test_wrong_key_is_an_auth_error(service: EmbeddedService) -> None:
    """A wrong bearer key gives ApiAuthError, never retried."""
    with ApiClient(service.base_url, "sk-wrong") as client, pytest.raises(ApiAuthError):
        client.list_jobs()


def test_flaky_service_never_duplicates_a_create(tmp_path: Path, data: Path) -> None:
    """With 500s and dropped connections injected, each suffix still yields exactly one job."""
    flaky = FaultConfig(error_rate=0.25, drop_rate=0.25, seed=3, step_delay=0.5)
    with (
        start_embedded(tmp_path / "svc", faults=flaky) as svc,
        ApiClient(svc.base_url, svc.api_key, timeout=10.0) as client,
    ):
        train = client.upload_file(data / "train.jsonl")
        suffixes = [f"flaky-{i}" for i in range(8)]
        jobs = [
            client.create_job(CreateJobRequest(model=MODEL, training_file=train.id, suffix=s))
            for s in suffixes
        ]
        assert [j.suffix for j in jobs] == suffixes
        assert client.stats["GET /fine_tuning/jobs"] > 0  # some creates were ambiguous
        listed = list(client.iter_jobs())
        assert sorted(j.suffix or "" for j in listed) == sorted(suffixes)
        assert client.stats["POST /fine_tuning/jobs"] > len(suffixes)  # faults did happen
