"""Spending less: pruning by cancelling jobs, token budgets, failure caps, objectives, evaluators,
enqueued points, reuse of exact repeats, grids run once. Real HTTP, real SQLite."""

from __future__ import annotations

import threading
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from sweeper.api.client import ApiClient
from sweeper.config import load_config
from sweeper.engine.objective import compute_values
from sweeper.engine.service import plan_sweep, run_sweep
from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.store.db import make_engine, make_sessionmaker
from sweeper.store.models import CheckpointRow


def checkpoints_of(path: Any, attempt_id: int) -> list[CheckpointRow]:
    engine = make_engine(load_config(path).storage_url)
    try:
        with make_sessionmaker(engine)() as s:
            return list(
                s.scalars(select(CheckpointRow).where(CheckpointRow.attempt_id == attempt_id))
            )
    finally:
        engine.dispose()


def test_pruned_trials_are_cancelled_before_their_last_epoch(
    tmp_path, make_config, rows_of, study_trials
):
    """A pruned trial's job is cancelled through the API before its last epoch: fewer tokens
    than a full run, partial per-epoch metrics kept, the trial PRUNED in Optuna."""
    faults = FaultConfig(step_delay=0.08)
    with start_embedded(tmp_path / "svc", api_key="k", faults=faults) as svc:
        path = make_config(
            svc,
            sweep={"n_trials": 8, "max_concurrent": 1, "sampler": "random", "seed": 3},
            api={"poll_interval": 0.05},
            job__hyperparameters={"n_epochs": 4},
            # alternating good and hopeless learning rates, so the median has something to cut
            search__learning_rate={"type": "categorical", "choices": [1e-3, 1e-6]},
            search__lora_r=None,
            search__warmup_ratio={"type": "float", "low": 0.0, "high": 0.1},  # no exact repeats
            pruning={"pruner": "median", "n_startup_trials": 1},
        )
        run_sweep(load_config(path), env={"SWEEPER_TEST_KEY": "k"})
        with ApiClient(svc.base_url, "k") as client:
            jobs = {j.id: j for j in client.iter_jobs()}
    rows = rows_of(path)
    pruned = [a for a in rows if a.trial_state == "PRUNED"]
    full = [a for a in rows if a.trial_state == "COMPLETE"]
    assert pruned and full
    for a in pruned:
        assert jobs[a.job_id].status == "cancelled"
        assert (a.trained_tokens or 0) < min(f.trained_tokens or 0 for f in full)
        kept = checkpoints_of(path, a.id)
        assert 1 <= len(kept) < 4
    by_number = {t.number: t for t in study_trials(path)}
    for a in pruned:
        trial = by_number[a.trial_number]
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.intermediate_values  # the partial metrics reached Optuna too


def test_token_budget_is_never_exceeded(local_service, service_env, make_config, rows_of):
    """With max_trained_tokens worth about 2.5 trials, the sweep stops launching in time,
    ends normally, names the budget, and the tokens trained stay under the cap."""
    probe = make_config(local_service, name="probe.toml", sweep={"n_trials": 1, "name": "probe"})
    run_sweep(load_config(probe), env=service_env)
    one_trial = rows_of(probe)[0].trained_tokens
    assert one_trial
    cap = int(one_trial * 2.5)
    path = make_config(
        local_service,
        sweep={"n_trials": 8, "max_concurrent": 3, "name": "capped", "storage": "sqlite:///b.db"},
        budget={"max_trained_tokens": cap},
    )
    result = run_sweep(load_config(path), env=service_env)
    rows = rows_of(path)
    spent = sum(a.trained_tokens or 0 for a in rows)
    assert spent <= cap
    assert len(rows) >= 2  # the budget was used, not just respected
    assert result.stop_reason is not None and "budget.max_trained_tokens" in result.stop_reason


def test_cost_budget_uses_the_price(local_service, service_env, make_config, rows_of):
    """max_cost with a price per million tokens caps spending the same way."""
    path = make_config(
        local_service,
        sweep={"n_trials": 6, "max_concurrent": 2},
        budget={"max_cost": 0.000_01, "price_per_million_tokens": 1.0},  # 10 tokens: none fit
    )
    result = run_sweep(load_config(path), env=service_env)
    assert result.stop_reason is not None and "budget.max_cost" in result.stop_reason
    assert rows_of(path) == []


def test_max_failed_trials_stops_launching(local_service, service_env, make_config, rows_of):
    """After max_failed_trials failures the run stops launching and says why (exit 0)."""
    path = make_config(
        local_service,
        sweep={"n_trials": 6, "max_concurrent": 1},
        search__learning_rate={"low": 0.5, "high": 0.9, "log": False},  # every trial diverges
        budget={"max_failed_trials": 2},
    )
    result = run_sweep(load_config(path), env=service_env)
    assert result.stop_reason is not None and "max_failed_trials" in result.stop_reason
    assert len(rows_of(path)) == 2


def test_timeout_stops_launching(tmp_path, make_config, rows_of):
    """budget.timeout stops new launches once the wall time is used; jobs in flight finish."""
    with start_embedded(tmp_path / "s", api_key="k", faults=FaultConfig(step_delay=0.3)) as svc:
        path = make_config(
            svc, sweep={"n_trials": 10, "max_concurrent": 1}, budget={"timeout": 0.5}
        )
        result = run_sweep(load_config(path), env={"SWEEPER_TEST_KEY": "k"})
    assert result.stop_reason is not None and "timeout" in result.stop_reason
    rows = rows_of(path)
    assert 1 <= len(rows) < 10
    assert all(a.state == "closed" for a in rows)


def test_multi_objective_tells_both_values(
    local_service, service_env, make_config, rows_of, study_trials
):
    """metric = [valid_loss, cost] with nsga2: each COMPLETE trial has two values."""
    path = make_config(
        local_service,
        sweep={
            "n_trials": 3,
            "sampler": "nsga2",
            "metric": ["valid_loss", "cost"],
            "direction": ["minimize", "minimize"],
        },
        budget={"price_per_million_tokens": 2.0},
    )
    run_sweep(load_config(path), env=service_env)
    for a in rows_of(path):
        assert a.trial_state == "COMPLETE"
        assert a.values is not None and len(a.values) == 2
        assert a.values[1] == pytest.approx((a.trained_tokens or 0) / 1e6 * 2.0)
    assert all(len(t.values) == 2 for t in study_trials(path))


def test_metric_reduce_last_or_min(tmp_path, make_config):
    """metric_reduce picks the last checkpoint's value or the lowest one."""

    class Ck:
        def __init__(self, step: int, valid: float) -> None:
            self.step_number, self.valid_loss = step, valid

    cks = [Ck(30, 1.5), Ck(10, 2.0), Ck(20, 1.2)]
    last = make_config(None, name="last.toml")
    low = make_config(None, name="min.toml", sweep={"metric_reduce": "min"})
    assert compute_values(load_config(last), cks, 100) == [1.5]
    assert compute_values(load_config(low), cks, 100) == [1.2]


def test_user_evaluator_values_and_failures(
    tmp_path, monkeypatch, local_service, service_env, make_config, rows_of, study_trials
):
    """An [objective] evaluator gets the trial's record and returns its value; when it raises,
    that trial fails with the message kept and the sweep goes on."""
    (tmp_path / "my_eval.py").write_text(
        "def score(record):\n"
        "    if record['params']['lora_r'] == 16:\n"
        "        raise RuntimeError('judge unavailable')\n"
        "    assert record['checkpoints'] and record['job_id'].startswith('ftjob-')\n"
        "    assert isinstance(record['result_files'], list)\n"
        "    assert all(c['result_files'] for c in record['checkpoints'])\n"
        "    return record['checkpoints'][-1]['metrics']['train_loss'] + 100\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = make_config(
        local_service,
        sweep={"n_trials": 4, "metric": "judge_score"},
        objective={"evaluator": "my_eval:score"},
        search__lora_r={"choices": [8, 16]},
        search__learning_rate={"type": "categorical", "choices": [1e-4, 3e-4, 5e-4, 8e-4]},
    )
    run_sweep(load_config(path), env=service_env)
    rows = rows_of(path)
    assert len(rows) == 4
    for a in rows:
        if a.params and a.params["lora_r"] == 16:
            assert a.trial_state == "FAIL"
        else:
            assert a.trial_state == "COMPLETE" and a.values and a.values[0] > 100
    failed = [t for t in study_trials(path) if t.state == optuna.trial.TrialState.FAIL]
    assert all("judge unavailable" in t.user_attrs["fail_reason"] for t in failed)


def test_enqueued_points_run_first(local_service, service_env, make_config, rows_of):
    """[[sweep.enqueue]] points are the first trials, with exactly those values."""
    path = make_config(local_service, sweep={"n_trials": 3})
    text = path.read_text().replace(
        "[api]",
        "[[sweep.enqueue]]\nlearning_rate = 0.0005\nlora_r = 16\n\n"
        "[[sweep.enqueue]]\nlearning_rate = 0.0002\n\n[api]",
    )
    path.write_text(text)
    run_sweep(load_config(path), env=service_env)
    by_trial = {a.trial_number: a.params for a in rows_of(path)}
    assert by_trial[0] == {"learning_rate": 0.0005, "lora_r": 16}
    assert by_trial[1]["learning_rate"] == 0.0002 and by_trial[1]["lora_r"] in (8, 16)


def test_exact_repeats_reuse_the_earlier_result(local_service, service_env, make_config, rows_of):
    """Resolved hyperparameters already run are not launched again; the result is reused."""
    path = make_config(
        local_service,
        sweep={"n_trials": 5, "max_concurrent": 1, "sampler": "random"},
        search__learning_rate=None,
        search__lora_r={"choices": [8, 16]},
    )
    run_sweep(load_config(path), env=service_env)
    rows = rows_of(path)
    launched = [a for a in rows if a.job_id]
    reused = [a for a in rows if a.reused_from is not None]
    assert len(rows) == 5
    assert len(launched) == len({a.params["lora_r"] for a in rows})  # one job per distinct point
    assert len(reused) == 5 - len(launched) >= 3
    by_id = {a.id: a for a in rows}
    assert all(a.values == by_id[a.reused_from].values for a in reused)
    with ApiClient(local_service.base_url, local_service.api_key) as client:
        assert len(list(client.iter_jobs())) == len(launched)


def test_grid_runs_each_point_once_across_two_workers(
    local_service, service_env, make_config, rows_of
):
    """Two workers on one SQLite sweep split a 2x2 grid: four trials, four distinct points."""
    path = make_config(
        local_service,
        sweep={"n_trials": 10, "max_concurrent": 2, "sampler": "grid"},
        search__learning_rate={"type": "categorical", "choices": [2e-4, 6e-4]},
    )
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(run_sweep(load_config(path), env=service_env))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2
    rows = rows_of(path)
    points = [tuple(sorted(a.params.items())) for a in rows]
    assert len(rows) == 4 and len(set(points)) == 4
    assert plan_sweep(load_config(path), env=service_env).notes  # says the grid caps n_trials
