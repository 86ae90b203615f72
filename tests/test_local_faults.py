"""Each fault flag of the local service has exactly the effect it names."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.local.testing import create_job, http_client, upload, wait_for, write_chat


def _statuses(tmp_path: Path, faults: FaultConfig, n: int) -> list[int | str]:
    out: list[int | str] = []
    with (
        start_embedded(tmp_path, faults=faults) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        for _ in range(n):
            try:
                out.append(c.get("fine_tuning/jobs").status_code)
            except httpx.TransportError:
                out.append("dropped")
    return out


def test_no_faults_by_default(tmp_path: Path) -> None:
    """With the default FaultConfig every request succeeds."""
    assert set(_statuses(tmp_path, FaultConfig(), 20)) == {200}


def test_error_rate_answers_500_reproducibly(tmp_path: Path) -> None:
    """--error-rate answers 500 at about that rate, and the same seed gives the same sequence."""
    first = _statuses(tmp_path / "a", FaultConfig(error_rate=0.5, seed=3), 40)
    again = _statuses(tmp_path / "b", FaultConfig(error_rate=0.5, seed=3), 40)
    assert first == again
    assert set(first) == {200, 500} and 8 <= first.count(500) <= 32


def test_error_rate_500_body_is_a_string_detail(tmp_path: Path) -> None:
    """An injected 500 has the provider's {"detail": "..."} body."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(error_rate=1.0)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        r = c.get("files")
    assert r.status_code == 500 and isinstance(r.json()["detail"], str)


def test_drop_rate_closes_connection_without_answer(tmp_path: Path) -> None:
    """--drop-rate 1 closes every connection without an HTTP answer."""
    assert set(_statuses(tmp_path, FaultConfig(drop_rate=1.0), 3)) == {"dropped"}


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    """Beyond --rate-limit requests per second the answer is 429 with a Retry-After header."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(rate_limit=2)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        answers = [c.get("fine_tuning/jobs") for _ in range(6)]
        limited = [r for r in answers if r.status_code == 429]
        assert [r.status_code for r in answers[:2]] == [200, 200] and len(limited) >= 3
        assert int(limited[0].headers["retry-after"]) >= 1
        time.sleep(1.0)
        assert c.get("fine_tuning/jobs").status_code == 200


def test_latency_delays_every_answer(tmp_path: Path) -> None:
    """--latency adds that many seconds to each answer."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(latency=0.3)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        start = time.monotonic()
        c.get("fine_tuning/jobs").raise_for_status()
        assert time.monotonic() - start >= 0.3


def test_job_failure_rate_fails_jobs_mid_training(tmp_path: Path) -> None:
    """--job-failure-rate 1 fails each job during training with internal_error."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(job_failure_rate=1.0, seed=1)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        file_id = upload(c, write_chat(tmp_path / "t.jsonl", 24))
        job = wait_for(c, create_job(c, file_id, hyperparameters={"n_epochs": 2})["id"])
        events = c.get(f"fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert job["status"] == "failed" and job["error"]["code"] == "internal_error"
    assert "resubmit" in job["error"]["message"]
    assert any(e["message"].startswith("Training started") for e in events)


def test_step_delay_slows_each_training_step(tmp_path: Path) -> None:
    """--step-delay sleeps per step, so a job takes at least steps x delay, with progress moving."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(step_delay=0.1)) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        file_id = upload(c, write_chat(tmp_path / "t.jsonl", 24))
        start = time.monotonic()
        job = create_job(c, file_id, hyperparameters={"n_epochs": 2})
        running = wait_for(c, job["id"], ("running",))
        time.sleep(0.35)
        mid = c.get(f"fine_tuning/jobs/{job['id']}").json()
        done = wait_for(c, job["id"])
        elapsed = time.monotonic() - start
    assert running["total_steps"] == done["total_steps"] and done["status"] == "succeeded"
    assert elapsed >= done["total_steps"] * 0.1
    assert 0 < mid["trained_steps"] < done["total_steps"] and mid["estimated_finish"]


def test_max_running_queues_the_jobs_beyond_it(tmp_path: Path) -> None:
    """With max_running=1 a second job waits `queued` while the first runs, then runs."""
    with (
        start_embedded(tmp_path, faults=FaultConfig(step_delay=0.05), max_running=1) as svc,
        http_client(svc.base_url, svc.api_key) as c,
    ):
        file_id = upload(c, write_chat(tmp_path / "t.jsonl", 16))
        first = create_job(c, file_id, hyperparameters={"n_epochs": 2})
        wait_for(c, first["id"], ("running",))
        second = create_job(c, file_id, hyperparameters={"n_epochs": 1})
        assert wait_for(c, second["id"], ("queued", "running"))["status"] == "queued"
        assert c.get(f"fine_tuning/jobs/{first['id']}").json()["status"] == "running"
        assert wait_for(c, second["id"])["status"] == "succeeded"


@pytest.mark.parametrize("flag", ["--error-rate", "--drop-rate", "--job-failure-rate"])
def test_serve_refuses_probabilities_outside_0_1(flag: str) -> None:
    """`sweep serve` refuses a probability flag outside [0, 1] with a usage error."""
    from click.testing import CliRunner

    from sweeper.cli import cli

    result = CliRunner().invoke(cli, ["serve", flag, "1.5"])
    assert result.exit_code == 2 and flag in result.output
