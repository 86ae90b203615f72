"""`sweep cancel` and `sweep gc` against the local service over real HTTP."""

from __future__ import annotations

import threading
from typing import Any

import optuna
from click.testing import CliRunner

from sweeper.api.client import ApiClient
from sweeper.api.models import CreateJobRequest
from sweeper.cli import cli
from sweeper.config import load_config
from sweeper.engine.control import cancel_sweep, gc_sweep
from sweeper.engine.runner import CANCELLED_BY_USER
from sweeper.engine.service import run_sweep
from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.store.db import optuna_storage


def run_in_background(path: Any, env: dict[str, str], launched: int) -> tuple[Any, Any, dict]:
    """Start run_sweep in a thread; return once `launched` jobs are in flight."""
    seen = threading.Semaphore(0)
    out: dict[str, Any] = {}

    def observer(kind: str, **info: Any) -> None:
        if kind == "launched":
            seen.release()

    def target() -> None:
        out["result"] = run_sweep(load_config(path), env=env, observer=observer)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    for _ in range(launched):
        assert seen.acquire(timeout=60)
    return thread, seen, out


def slow_service(tmp_path: Any) -> Any:
    return start_embedded(tmp_path / "slow", api_key="k", faults=FaultConfig(step_delay=0.5))


def test_cancel_stops_jobs_closes_trials_and_stops_launching(tmp_path, make_config, rows_of):
    """`sweep cancel` cancels every job in flight, fails their trials with the reason, and a
    running `sweep run` launches nothing more and ends with that stop reason."""
    with slow_service(tmp_path) as svc:
        path = make_config(svc, sweep={"n_trials": 6, "max_concurrent": 2})
        env = {"SWEEPER_TEST_KEY": "k"}
        thread, _, out = run_in_background(path, env, launched=2)
        cancelled = cancel_sweep(load_config(path), env=env)
        thread.join(timeout=60)
        assert not thread.is_alive()
        with ApiClient(svc.base_url, "k") as client:
            jobs = list(client.iter_jobs())
    assert len(cancelled) == 2
    assert len(jobs) == 2 and all(j.status == "cancelled" for j in jobs)
    assert out["result"].stop_reason == CANCELLED_BY_USER
    rows = rows_of(path)
    assert [r.trial_state for r in rows] == ["FAIL", "FAIL"]
    assert all(r.cancel_reason == "cancelled by user" for r in rows)


def test_cancel_one_trial_leaves_the_others_running(tmp_path, make_config, rows_of):
    """`sweep cancel --trial N` cancels only that trial's job; the sweep goes on to the end."""
    with slow_service(tmp_path) as svc:
        path = make_config(
            svc, sweep={"n_trials": 3, "max_concurrent": 2}, job__hyperparameters={"n_epochs": 1}
        )
        env = {"SWEEPER_TEST_KEY": "k"}
        thread, _, out = run_in_background(path, env, launched=2)
        result = CliRunner().invoke(cli, ["cancel", str(path), "--trial", "0"], env=env)
        assert result.exit_code == 0, result.output
        assert "trial 0: cancelled ftjob-" in result.output
        thread.join(timeout=120)
    assert out["result"].stop_reason is None
    states = {r.trial_number: r.trial_state for r in rows_of(path)}
    assert states[0] == "FAIL"
    assert states[1] == "COMPLETE" and states[2] == "COMPLETE"
    storage = optuna_storage(load_config(path).storage_url)
    try:
        trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    assert "cancelled" in trials[0].user_attrs["fail_reason"]


def test_gc_lists_and_cancels_only_orphans(local_service, service_env, make_config, rows_of):
    """Jobs with this sweep's suffix that no attempt owns are listed, and cancelled with --yes;
    the sweep's own jobs and other sweeps' jobs are left alone."""
    path = make_config(local_service, sweep={"n_trials": 2})
    run_sweep(load_config(path), env=service_env)
    with ApiClient(local_service.base_url, local_service.api_key) as client:
        file_id = client.list_files(purpose="fine-tune")[0].id
        orphan = client.create_job(
            CreateJobRequest(
                model="meta-llama/Llama-3.1-8B-Instruct",
                training_file=file_id,
                suffix="sw-t-t9-0123456789ab",
            )
        )
        other = client.create_job(
            CreateJobRequest(
                model="meta-llama/Llama-3.1-8B-Instruct",
                training_file=file_id,
                suffix="sw-t-other-t1-0123456789ab",
            )
        )
    listed = gc_sweep(load_config(path), env=service_env)
    assert [o.job.id for o in listed] == [orphan.id]
    runner = CliRunner()
    result = runner.invoke(cli, ["gc", str(path), "--yes"], env=service_env)
    assert result.exit_code == 0, result.output
    assert orphan.id in result.output and other.id not in result.output
    with ApiClient(local_service.base_url, local_service.api_key) as client:
        assert client.retrieve_job(orphan.id).status in ("cancelled", "succeeded")
        owned = {r.job_id for r in rows_of(path)}
        assert all(client.retrieve_job(j).status == "succeeded" for j in owned)
