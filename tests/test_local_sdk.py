"""The official openai Python SDK works against the local service."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.local.testing import write_chat


def test_openai_sdk_round_trip(tmp_path: Path) -> None:
    """files, fine_tuning.jobs (auto-paginated list, cancel, events) and checkpoints via the SDK."""
    faults = FaultConfig(step_delay=0.005)
    with (
        start_embedded(tmp_path / "s", faults=faults) as svc,
        OpenAI(base_url=svc.base_url, api_key=svc.api_key, max_retries=0) as client,
    ):
        with write_chat(tmp_path / "t.jsonl", 24).open("rb") as fh:
            train = client.files.create(file=fh, purpose="fine-tune")
        assert client.files.retrieve(train.id).bytes == train.bytes
        assert train.id in {f.id for f in client.files.list()}  # auto-paging terminates
        jobs = [
            client.fine_tuning.jobs.create(
                model="Qwen/Qwen3-4B", training_file=train.id, seed=4, suffix=f"t{i}",
                hyperparameters={"n_epochs": 2, "learning_rate": 1e-3},  # type: ignore[typeddict-unknown-key]
            )
            for i in range(3)
        ]  # fmt: skip
        listed = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # pages of 2
        assert listed[:3] == [j.id for j in reversed(jobs)]
        deadline = time.monotonic() + 30
        while client.fine_tuning.jobs.retrieve(jobs[0].id).status != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        done = client.fine_tuning.jobs.retrieve(jobs[0].id)
        assert done.trained_tokens and done.suffix == "t0"  # type: ignore[attr-defined]
        events = client.fine_tuning.jobs.list_events(jobs[0].id, limit=100).data
        assert events[-1].message == "Training completed successfully"
        ckpts = client.fine_tuning.jobs.checkpoints.list(jobs[0].id).data
        assert len(ckpts) == 2 and ckpts[-1].metrics.train_loss is not None
        long = client.fine_tuning.jobs.create(
            model="Qwen/Qwen3-4B", training_file=train.id,
            hyperparameters={"n_epochs": 20},
        )  # fmt: skip
        assert client.fine_tuning.jobs.cancel(long.id).status == "cancelled"


def test_openai_sdk_sees_422_and_401_as_its_errors(tmp_path: Path) -> None:
    """A 422 becomes UnprocessableEntityError and a bad key AuthenticationError in the SDK."""
    with start_embedded(tmp_path / "s") as svc:
        good = OpenAI(base_url=svc.base_url, api_key=svc.api_key, max_retries=0)
        bad = OpenAI(base_url=svc.base_url, api_key="wrong", max_retries=0)
        with good, bad:
            with pytest.raises(openai.UnprocessableEntityError):
                good.fine_tuning.jobs.create(model="no-such-model", training_file="file-x")
            with pytest.raises(openai.AuthenticationError):
                bad.files.list()
