"""The local service's HTTP API, route by route, over real HTTP (finetune-api.md 1-5, 10)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.local.embedded import EmbeddedService, start_embedded
from sweeper.local.testing import create_job, http_client, upload, wait_for, write_chat

FAST = {"n_epochs": 2, "batch_size": 8, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    with start_embedded(tmp_path_factory.mktemp("local-api"), api_key="test-key") as svc:
        yield svc


@pytest.fixture
def client(service: EmbeddedService) -> Iterator[httpx.Client]:
    with http_client(service.base_url, service.api_key) as c:
        yield c


@pytest.fixture(scope="module")
def train_id(service: EmbeddedService, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_chat(tmp_path_factory.mktemp("data") / "train.jsonl", 24)
    with http_client(service.base_url, service.api_key) as c:
        return upload(c, path)


@pytest.fixture(scope="module")
def valid_id(service: EmbeddedService, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_chat(tmp_path_factory.mktemp("data") / "valid.jsonl", 8, seed=2)
    with http_client(service.base_url, service.api_key) as c:
        return upload(c, path)


@pytest.fixture(scope="module")
def done_job(service: EmbeddedService, train_id: str, valid_id: str) -> dict[str, Any]:
    with http_client(service.base_url, service.api_key) as c:
        job = create_job(c, train_id, validation_file=valid_id, hyperparameters=FAST, seed=3)
        return wait_for(c, job["id"])


def _locs(r: httpx.Response) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [d["loc"] for d in r.json()["detail"]]


def test_service_answers_on_loopback_base_url(service: EmbeddedService) -> None:
    """The embedded service's base_url is http://127.0.0.1:PORT/v1."""
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", service.base_url)


def test_missing_or_wrong_bearer_token_is_401(service: EmbeddedService) -> None:
    """Requests without the configured bearer token get 401 with a string detail."""
    with httpx.Client(base_url=service.base_url + "/") as anon:
        assert anon.get("files").status_code == 401
        r = anon.get("files", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert isinstance(r.json()["detail"], str)


def test_models_route_lists_the_nebius_names(client: httpx.Client) -> None:
    """GET /v1/models lists the Nebius model ids the service accepts."""
    ids = {m["id"] for m in client.get("models").json()["data"]}
    assert {"meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-4B", "unsloth/gpt-oss-20b-BF16"} <= ids


def test_file_upload_retrieve_content_list_delete(client: httpx.Client, tmp_path: Path) -> None:
    """A file round-trips: upload, retrieve, content, list, delete, then 404."""
    path = write_chat(tmp_path / "f.jsonl", 3)
    file_id = upload(client, path)
    assert file_id.startswith("file-")
    obj = client.get(f"files/{file_id}").json()
    assert obj["bytes"] == path.stat().st_size and obj["purpose"] == "fine-tune"
    assert obj["filename"] == "f.jsonl" and obj["object"] == "file"
    assert client.get(f"files/{file_id}/content").content == path.read_bytes()
    assert file_id in {f["id"] for f in client.get("files", params={"limit": 100}).json()["data"]}
    assert client.delete(f"files/{file_id}").json() == {
        "id": file_id, "object": "file", "deleted": True
    }  # fmt: skip
    assert client.get(f"files/{file_id}").status_code == 404


def test_file_upload_with_bad_purpose_is_422(client: httpx.Client, tmp_path: Path) -> None:
    """An unknown file purpose is a 422 naming the purpose field."""
    assert _locs(client.post("files", files={"file": ("a", b"{}")}, data={"purpose": "nope"})) == [
        ["body", "purpose"]
    ]


def test_file_list_pages_with_after(client: httpx.Client, tmp_path: Path) -> None:
    """GET /v1/files pages with limit/after, newest first, and ends with an empty page."""
    ids = [upload(client, write_chat(tmp_path / f"p{i}.jsonl", 2)) for i in range(3)]
    first = client.get("files", params={"limit": 2}).json()["data"]
    assert [f["id"] for f in first] == ids[::-1][:2]
    rest = client.get("files", params={"limit": 2, "after": first[-1]["id"]}).json()["data"]
    assert rest[0]["id"] == ids[0]


def test_create_job_echoes_fields_with_defaults(client: httpx.Client, train_id: str) -> None:
    """Create answers a Nebius job: ftjob id, defaults filled, suffix and seed echoed, no tags."""
    job = create_job(
        client, train_id, hyperparameters={"n_epochs": 1, "learning_rate_multiplier": 2.0},
        suffix="trial-1", seed=7, tags=["sweep-a"],
    )  # fmt: skip
    assert re.fullmatch(r"ftjob-[0-9a-f]{32}", job["id"])
    assert job["status"] == "validating_files" and job["object"] == "fine_tuning.job"
    hp = job["hyperparameters"]
    assert hp["n_epochs"] == 1 and hp["learning_rate"] == 1e-5 and hp["lora"] is False
    assert hp["context_length"] == 8192 and hp["batch_size"] == 8
    assert "learning_rate_multiplier" not in hp  # accepted and ignored, as Nebius does
    assert job["suffix"] == "trial-1" and job["seed"] == 7 and "tags" not in job
    wait_for(client, job["id"])


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [({"batch_size": 65}, "batch_size"), ({"n_epochs": 0}, "n_epochs"),
     ({"learning_rate": -1}, "learning_rate"), ({"context_length": 4096}, "context_length"),
     ({"lora_r": 4}, "lora_r"), ({"max_grad_norm": 0}, "max_grad_norm"),
     ({"warmup_ratio": 1.5}, "warmup_ratio"), ({"lora_dropout": 2}, "lora_dropout")],
)  # fmt: skip
def test_out_of_range_hyperparameter_is_422(
    client: httpx.Client, train_id: str, hyperparameters: dict[str, Any], field: str
) -> None:
    """A hyperparameter outside the documented range is a 422 whose loc names it."""
    r = client.post(
        "fine_tuning/jobs",
        json={"model": "Qwen/Qwen3-4B", "training_file": train_id,
              "hyperparameters": hyperparameters},
    )  # fmt: skip
    assert _locs(r) == [["body", "hyperparameters", field]]


def test_unknown_model_file_and_malformed_body_are_422(client: httpx.Client, train_id: str) -> None:
    """Unknown model, unknown file, missing field and invalid JSON each give a 422 detail list."""
    assert _locs(
        client.post("fine_tuning/jobs", json={"model": "x", "training_file": train_id})
    ) == [["body", "model"]]
    r = client.post("fine_tuning/jobs", json={"model": "Qwen/Qwen3-4B", "training_file": "file-x"})
    assert _locs(r) == [["body", "training_file"]]
    assert _locs(client.post("fine_tuning/jobs", json={"model": "Qwen/Qwen3-4B"})) == [
        ["body", "training_file"]
    ]
    r = client.post(
        "fine_tuning/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_ids_are_404_with_string_detail(client: httpx.Client) -> None:
    """Unknown job, checkpoint and file ids answer 404 {"detail": "..."}."""
    for path in ("fine_tuning/jobs/ftjob-nope", "fine_tuning/jobs/ftjob-nope/events",
                 "fine_tuning/jobs/ftjob-nope/checkpoints", "files/file-nope"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404 and isinstance(r.json()["detail"], str), path
    assert client.post("fine_tuning/jobs/ftjob-nope/cancel").status_code == 404


def test_finished_job_has_progress_tokens_and_result_files(done_job: dict[str, Any]) -> None:
    """A succeeded job reports all steps trained, real tokens and the last checkpoint's files."""
    assert done_job["status"] == "succeeded", done_job["error"]
    assert done_job["trained_steps"] == done_job["total_steps"] > 0
    assert done_job["trained_tokens"] > 0 and done_job["finished_at"] >= done_job["created_at"]
    assert done_job["result_files"] and done_job["error"] is None


def test_events_are_oldest_first_and_page(client: httpx.Client, done_job: dict[str, Any]) -> None:
    """Events run from submission to completion, oldest first, and page with after/limit."""
    url = f"fine_tuning/jobs/{done_job['id']}/events"
    page = client.get(url, params={"limit": 100}).json()
    messages = [e["message"] for e in page["data"]]
    assert messages[0] == "Job is submitted" and messages[-1] == "Training completed successfully"
    assert "Dataset 'training' processed successfully" in messages
    assert sum(m.startswith("Epoch ") for m in messages) == 2
    assert all(re.fullmatch(r"ftevent-[0-9a-f]{32}", e["id"]) for e in page["data"])
    first = client.get(url, params={"limit": 2}).json()
    assert first["has_more"] is True and [e["id"] for e in first["data"]] == [
        e["id"] for e in page["data"][:2]
    ]
    nxt = client.get(url, params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert nxt["data"][0]["id"] == page["data"][2]["id"]


def test_one_checkpoint_per_epoch_with_metrics(
    client: httpx.Client, done_job: dict[str, Any]
) -> None:
    """Each epoch leaves a checkpoint with step_number, the full metrics and a downloadable file."""
    page = client.get(f"fine_tuning/jobs/{done_job['id']}/checkpoints").json()
    ckpts = page["data"]
    assert len(ckpts) == 2 and page["has_more"] is False
    assert page["first_id"] == ckpts[0]["id"] and page["last_id"] == ckpts[-1]["id"]
    steps = [c["step_number"] for c in ckpts]
    assert steps == [done_job["total_steps"] // 2, done_job["total_steps"]]
    for c in ckpts:
        assert re.fullmatch(r"ftckpt_[0-9a-f-]{36}", c["id"])
        assert c["fine_tuning_job_id"] == done_job["id"] and c["fine_tuned_model_checkpoint"]
        m = c["metrics"]
        for key in ("train_loss", "valid_loss", "train_mean_token_accuracy",
                    "valid_mean_token_accuracy", "full_valid_loss",
                    "full_valid_mean_token_accuracy"):  # fmt: skip
            assert isinstance(m[key], float), key
        assert m["step"] == c["step_number"]
        (file_id,) = c["result_files"]
        assert client.get(f"files/{file_id}/content").content[:2] == b"PK"  # an npz archive
    one = client.get(f"fine_tuning/jobs/{done_job['id']}/checkpoints/{ckpts[0]['id']}").json()
    assert one["id"] == ckpts[0]["id"] and one["metrics"] == ckpts[0]["metrics"]


def test_job_list_is_newest_first_and_pages(client: httpx.Client, train_id: str) -> None:
    """GET /v1/fine_tuning/jobs lists newest first with has_more and after."""
    ids = [create_job(client, train_id, hyperparameters=FAST)["id"] for _ in range(3)]
    page = client.get("fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    nxt = client.get("fine_tuning/jobs", params={"limit": 2, "after": ids[1]}).json()
    assert nxt["data"][0]["id"] == ids[0]
    for job_id in ids:
        wait_for(client, job_id)


def test_cancel_stops_a_running_job(tmp_path: Path) -> None:
    """Cancel turns a running job `cancelled` at once, and training stops within a step."""
    from sweeper.local.faults import FaultConfig

    with (
        start_embedded(tmp_path, faults=FaultConfig(step_delay=0.05)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        file_id = upload(c, write_chat(tmp_path / "t.jsonl", 24))
        job = create_job(c, file_id, hyperparameters={"n_epochs": 5})
        wait_for(c, job["id"], ("running",))
        cancelled = c.post(f"fine_tuning/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        steps = cancelled["trained_steps"]
        import time

        time.sleep(0.3)
        after = c.get(f"fine_tuning/jobs/{job['id']}").json()
        assert after["status"] == "cancelled" and after["trained_steps"] <= steps + 1
        assert after["trained_steps"] < after["total_steps"]
        events = c.get(f"fine_tuning/jobs/{job['id']}/events").json()["data"]
        assert events[-1]["message"] == "Job was cancelled by the user"


@pytest.mark.parametrize(
    ("line", "code"),
    [('{"messages": [{"role": "user", "content": "hi"}]}', "invalid_training_file"),
     ("not json", "invalid_training_file")],
)  # fmt: skip
def test_bad_dataset_fails_job_naming_the_line(
    client: httpx.Client, tmp_path: Path, line: str, code: str
) -> None:
    """A malformed training file fails the job in validating_files, naming the bad line."""
    path = write_chat(tmp_path / "bad.jsonl", 3)
    path.write_text(path.read_text() + line + "\n")
    job = wait_for(client, create_job(client, upload(client, path))["id"])
    assert job["status"] == "failed" and job["error"]["code"] == code
    assert "line 4" in job["error"]["message"] and job["trained_steps"] == 0


def test_bad_validation_file_fails_with_its_own_code(
    client: httpx.Client, train_id: str, tmp_path: Path
) -> None:
    """A malformed validation file fails the job with invalid_validation_file."""
    bad = tmp_path / "v.jsonl"
    bad.write_text('{"prompt": 1, "completion": "x"}\n')
    job = create_job(client, train_id, validation_file=upload(client, bad))
    failed = wait_for(client, job["id"])
    assert failed["error"]["code"] == "invalid_validation_file"
    assert "line 1" in failed["error"]["message"]


def test_instruction_and_text_datasets_train(client: httpx.Client, tmp_path: Path) -> None:
    """Instruction (prompt/completion) and text JSONL both train to success."""
    inst = tmp_path / "i.jsonl"
    inst.write_text("".join(f'{{"prompt": "{i}+1=", "completion": "{i + 1}"}}\n' for i in range(9)))
    text = tmp_path / "t.jsonl"
    text.write_text("".join(f'{{"text": "line number {i}"}}\n' for i in range(9)))
    for path in (inst, text):
        job = wait_for(client, create_job(client, upload(client, path), hyperparameters=FAST)["id"])
        assert job["status"] == "succeeded", job["error"]


def test_wandb_api_key_is_never_echoed_nor_stored(
    service: EmbeddedService, client: httpx.Client, train_id: str
) -> None:
    """The W&B api_key is accepted but neither echoed nor written to the state folder."""
    secret = "wandb-secret-0123456789"
    job = create_job(
        client, train_id, hyperparameters=FAST,
        integrations=[{"type": "wandb", "wandb": {"project": "p", "api_key": secret}}],
    )  # fmt: skip
    assert job["integrations"] == [{"type": "wandb", "wandb": {"project": "p"}}]
    assert secret not in client.get(f"fine_tuning/jobs/{job['id']}").text
    wait_for(client, job["id"])
    folder = service.state.folder
    for path in folder.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_stats_count_requests_by_route(service: EmbeddedService, client: httpx.Client) -> None:
    """stats() and GET /_stats count requests per route template."""
    before = service.stats().get("GET /v1/fine_tuning/jobs/{job_id}", 0)
    client.get("fine_tuning/jobs/ftjob-a")
    client.get("fine_tuning/jobs/ftjob-b")
    assert service.stats()["GET /v1/fine_tuning/jobs/{job_id}"] == before + 2
    root = service.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/_stats").json()["GET /v1/fine_tuning/jobs/{job_id}"] == before + 2


def test_examples_longer_than_the_context_are_truncated_with_a_warning(
    client: httpx.Client, tmp_path: Path
) -> None:
    """Without packing, an example longer than the scaled context trains truncated, with a warn."""
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "%s"}\n{"text": "short"}\n' % ("x" * 300))
    job = create_job(client, upload(client, path), hyperparameters={**FAST, "packing": False})
    assert wait_for(client, job["id"])["status"] == "succeeded"
    events = client.get(f"fine_tuning/jobs/{job['id']}/events").json()["data"]
    warns = [e["message"] for e in events if e["level"] == "warn"]
    assert len(warns) == 1 and "1 training examples are longer" in warns[0]
