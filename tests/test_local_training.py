"""Real training in the local service: hyperparameters matter, seeds repeat, LoRA, divergence."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sweeper.local import catalog, trainer
from sweeper.local.datasets import parse
from sweeper.local.embedded import EmbeddedService, start_embedded
from sweeper.local.sample_data import examples
from sweeper.local.testing import create_job, http_client, upload, wait_for, write_chat

BASE = catalog.MODELS["meta-llama/Llama-3.1-8B-Instruct"]


def _data(n: int, seed: int) -> list[Any]:
    import json

    raw = "".join(json.dumps(e) + "\n" for e in examples(n, seed)).encode()
    return parse(raw)[1]


TRAIN, VALID = _data(40, 1), _data(10, 2)
BASELINE = trainer.HParams(n_epochs=2, learning_rate=1e-3, batch_size=8)


def _run(
    hp: trainer.HParams, seed: int = 0, weights: trainer.Params | None = None
) -> trainer.Metrics:
    return trainer.train(BASE, hp, seed, TRAIN, VALID, trainer.Hooks(), weights)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedService]:
    with start_embedded(tmp_path_factory.mktemp("local-train"), max_running=3) as svc:
        yield svc


@pytest.fixture
def client(service: EmbeddedService) -> Iterator[httpx.Client]:
    with http_client(service.base_url, service.api_key) as c:
        yield c


@pytest.fixture(scope="module")
def files(service: EmbeddedService, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    with http_client(service.base_url, service.api_key) as c:
        return {
            "training_file": upload(c, write_chat(folder / "t.jsonl", 40)),
            "validation_file": upload(c, write_chat(folder / "v.jsonl", 10, seed=2)),
        }


def _final_metrics(client: httpx.Client, job_id: str) -> dict[str, Any]:
    ckpts = client.get(f"fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    return dict(ckpts[-1]["metrics"])


def test_three_learning_rates_give_three_valid_losses(
    client: httpx.Client, files: dict[str, str]
) -> None:
    """Three learning rates train to three different validation losses; the good one wins."""
    ids = {
        lr: create_job(client, **files, hyperparameters={"n_epochs": 2, "learning_rate": lr})["id"]
        for lr in (1e-5, 1e-4, 1e-3)
    }
    losses = {}
    for lr, job_id in ids.items():
        assert wait_for(client, job_id)["status"] == "succeeded"
        losses[lr] = _final_metrics(client, job_id)["full_valid_loss"]
    assert len(set(losses.values())) == 3
    assert losses[1e-3] < losses[1e-4] < losses[1e-5]


def test_same_seed_same_losses_other_seed_other_losses(
    client: httpx.Client, files: dict[str, str]
) -> None:
    """Two jobs with the same seed report identical metrics; another seed differs."""
    hp = {"n_epochs": 2, "learning_rate": 1e-3, "lora": True, "lora_dropout": 0.1}
    ids = [create_job(client, **files, hyperparameters=hp, seed=s)["id"] for s in (5, 5, 6)]
    metrics = [(wait_for(client, i), _final_metrics(client, i))[1] for i in ids]
    assert metrics[0] == metrics[1]
    assert metrics[0]["train_loss"] != metrics[2]["train_loss"]


def test_too_high_learning_rate_fails_job_as_diverged(
    client: httpx.Client, files: dict[str, str]
) -> None:
    """A far too high learning rate diverges and fails the job with training_diverged."""
    job = create_job(client, **files, hyperparameters={"learning_rate": 0.1})
    failed = wait_for(client, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "training_diverged" and failed["error"]["message"]
    events = client.get(f"fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert events[-1]["level"] == "error"


def test_trained_tokens_count_every_token_of_every_epoch(
    client: httpx.Client, files: dict[str, str]
) -> None:
    """trained_tokens equals the input tokens of all rows times the number of epochs."""
    job = wait_for(client, create_job(client, **files, hyperparameters={"n_epochs": 3})["id"])
    rows = trainer.build_rows(TRAIN, trainer.HParams())
    assert job["trained_tokens"] == 3 * sum(len(t) - 1 for t in rows.tokens)


def test_lora_trains_only_adapters_and_leaves_base_bit_identical() -> None:
    """With lora the base weights stay bit-identical and only A/B adapters are trained."""
    base = trainer.base_weights(BASE)
    frozen = {k: v.copy() for k, v in base.items()}
    seen: list[trainer.Params] = []
    hooks = trainer.Hooks(on_epoch=lambda e, m, p: seen.append({k: v.copy() for k, v in p.items()}))
    hp = dataclasses.replace(BASELINE, lora=True, lora_r=8, lora_alpha=16)
    trainer.train(BASE, hp, 0, TRAIN, VALID, hooks, base)
    assert all(np.array_equal(base[k], frozen[k]) for k in base)
    assert set(seen[-1]) == {"A1", "B1", "A2", "B2"}
    assert np.abs(seen[-1]["B1"]).sum() > 0  # the adapters did move (B starts at zero)


def test_full_fine_tuning_changes_every_base_weight_matrix() -> None:
    """Without lora every weight matrix of the model is trained."""
    base = trainer.base_weights(BASE)
    seen: list[trainer.Params] = []
    trainer.train(
        BASE, BASELINE, 0, TRAIN, VALID, trainer.Hooks(on_epoch=lambda e, m, p: seen.append(p))
    )
    assert set(seen[-1]) == set(base)
    assert all(not np.array_equal(seen[-1][k], base[k]) for k in ("E", "W1", "W2"))


def test_base_weights_are_a_function_of_the_model_name() -> None:
    """The same model name gives bit-identical bases; another name another base."""
    a, b = trainer.base_weights(BASE), trainer.base_weights(BASE)
    other = trainer.base_weights(catalog.MODELS["meta-llama/Llama-3.1-8B"])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], other["W1"])


@pytest.mark.parametrize(
    "change",
    [{"learning_rate": 3e-4}, {"n_epochs": 3}, {"batch_size": 4}, {"weight_decay": 5.0},
     {"max_grad_norm": 0.01}, {"packing": False}, {"context_length": 16384},
     {"warmup_ratio": 0.5}, {"lora": True}],
)  # fmt: skip
def test_each_hyperparameter_changes_the_losses(change: dict[str, Any]) -> None:
    """Changing any one hyperparameter from the baseline changes the training loss."""
    assert _run(dataclasses.replace(BASELINE, **change)).train_loss != _run(BASELINE).train_loss


@pytest.mark.parametrize("change", [{"lora_r": 32}, {"lora_alpha": 32}, {"lora_dropout": 0.3}])
def test_each_lora_knob_changes_the_losses(change: dict[str, Any]) -> None:
    """lora_r, lora_alpha and lora_dropout each change a LoRA run's training loss."""
    lora = dataclasses.replace(BASELINE, lora=True)
    assert _run(dataclasses.replace(lora, **change)).train_loss != _run(lora).train_loss


def test_quickstart_job_trains_in_well_under_a_second() -> None:
    """A 100-example, 2-epoch job trains in under a second of CPU on this machine."""
    import time

    data = _data(100, 1)
    start = time.process_time()
    trainer.train(BASE, dataclasses.replace(BASELINE, n_epochs=2), 0, data, VALID, trainer.Hooks())
    assert time.process_time() - start < 1.0


def test_context_length_scales_rows_and_window(tmp_path: Path) -> None:
    """context_length sets the row length (context/64) and the causal window (context/512)."""
    hp = trainer.HParams(context_length=16384)
    assert (hp.row_len, hp.window) == (256, 32)
    rows = trainer.build_rows(TRAIN, hp)
    assert max(len(t) for t in rows.tokens) == 257
