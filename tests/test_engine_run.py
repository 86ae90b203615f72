"""The sweep engine end to end: real HTTP to the local service, a real SQLite file."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from sweeper.api.client import ApiClient
from sweeper.config import load_config
from sweeper.engine.service import plan_sweep, run_sweep
from sweeper.errors import ConfigChanged
from sweeper.store.db import make_engine, make_sessionmaker
from sweeper.store.models import CLOSED, IN_FLIGHT_STATES, Attempt


def jobs_at(service: Any) -> list[Any]:
    with ApiClient(service.base_url, service.api_key) as client:
        return list(client.iter_jobs())


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **info: Any) -> None:
        self.events.append((kind, info))

    def kinds(self) -> Counter[str]:
        return Counter(k for k, _ in self.events)


def test_sweep_runs_exactly_n_trials_one_job_each(
    local_service, service_env, make_config, rows_of, study_trials
):
    """n_trials trials end closed in Optuna and in sweeper's tables, each with exactly one job."""
    path = make_config(local_service, sweep={"n_trials": 5, "max_concurrent": 2})
    result = run_sweep(load_config(path), env=service_env)
    assert result.stop_reason is None
    done = study_trials(path)
    assert len(done) == 5
    assert all(t.state.is_finished() for t in done)
    rows = rows_of(path)
    assert len(rows) == 5 and all(a.state == CLOSED for a in rows)
    jobs = jobs_at(local_service)
    assert sorted(j.id for j in jobs) == sorted(a.job_id for a in rows)
    assert Counter(j.suffix for j in jobs) == Counter(a.suffix for a in rows)
    # the trial's job id is visible to optuna-dashboard users
    assert {t.user_attrs["job_id"] for t in done} == {a.job_id for a in rows}


def test_max_concurrent_holds_at_every_launch(local_service, service_env, make_config):
    """At every POST, at most max_concurrent attempts of the sweep are in flight."""
    path = make_config(local_service, sweep={"n_trials": 6, "max_concurrent": 2})
    cfg = load_config(path)
    engine = make_engine(cfg.storage_url)
    Session = make_sessionmaker(engine)
    seen: list[int] = []

    def hook(point: str, attempt_id: int) -> None:
        if point == "before_post":
            with Session() as s:
                rows = s.scalars(select(Attempt).where(Attempt.state.in_(IN_FLIGHT_STATES)))
                seen.append(len(list(rows)))

    run_sweep(cfg, env=service_env, hook=hook)
    engine.dispose()
    assert len(seen) == 6
    assert max(seen) <= 2
    assert max(seen) == 2  # the cap is used, not just respected


def test_running_a_complete_sweep_again_launches_nothing(
    local_service, service_env, make_config, study_trials
):
    """The same command on a finished sweep says it is complete and creates no job."""
    path = make_config(local_service, sweep={"n_trials": 3})
    run_sweep(load_config(path), env=service_env)
    before = len(jobs_at(local_service))
    again = run_sweep(load_config(path), env=service_env)
    assert again.stop_reason is None
    assert sum(again.counts.values()) == 3
    assert len(jobs_at(local_service)) == before == 3
    assert len(study_trials(path)) == 3


def test_n_trials_is_global_across_resumes(local_service, service_env, make_config, study_trials):
    """A second run with a larger --n-trials adds only the difference."""
    path = make_config(local_service, sweep={"n_trials": 2})
    run_sweep(load_config(path), env=service_env)
    run_sweep(load_config(path), env=service_env, n_trials=4)
    assert len(study_trials(path)) == 4
    assert len(jobs_at(local_service)) == 4


def test_changed_search_space_is_refused_with_a_diff(local_service, service_env, make_config):
    """Resuming with another search range fails with the changed field, unless allowed."""
    path = make_config(local_service, sweep={"n_trials": 1})
    run_sweep(load_config(path), env=service_env)
    make_config(
        local_service,
        sweep={"n_trials": 2},
        search__learning_rate={"low": 2e-4},
    )
    with pytest.raises(ConfigChanged) as err:
        run_sweep(load_config(path), env=service_env)
    assert "search.learning_rate.low: 0.0001 -> 0.0002" in str(err.value)
    assert len(jobs_at(local_service)) == 1
    run_sweep(load_config(path), env=service_env, allow_config_change=True)
    assert len(jobs_at(local_service)) == 2


def test_dry_run_writes_nothing_and_uploads_nothing(local_service, service_env, make_config):
    """--dry-run samples the trials and estimates tokens without a DB file or an upload."""
    path = make_config(local_service, sweep={"n_trials": 3})
    plan = plan_sweep(load_config(path), env=service_env)
    assert len(plan.trials) == 3
    assert plan.total_tokens and plan.total_tokens > 0
    assert not (path.parent / "sweeps.db").exists()
    with ApiClient(local_service.base_url, local_service.api_key) as client:
        assert client.list_files(purpose="fine-tune") == []
        assert list(client.iter_jobs()) == []


def test_datasets_upload_once_per_provider(local_service, service_env, make_config):
    """Two sweeps on the same data and provider share one upload of each file."""
    a = make_config(local_service, sweep={"n_trials": 1, "name": "a"})
    run_sweep(load_config(a), env=service_env)
    b = make_config(local_service, name="b.toml", sweep={"n_trials": 1, "name": "b"})
    run_sweep(load_config(b), env=service_env)
    with ApiClient(local_service.base_url, local_service.api_key) as client:
        files = client.list_files(purpose="fine-tune")
    assert sorted(f.filename for f in files) == ["train.jsonl", "valid.jsonl"]  # once each


def test_transient_job_failures_are_retried_as_new_attempts(
    tmp_path, make_config, rows_of, study_trials
):
    """A provider-side job failure gets one more attempt of the same trial; its error is kept."""
    from sweeper.local.embedded import start_embedded
    from sweeper.local.faults import FaultConfig

    faults = FaultConfig(job_failure_rate=1.0, seed=1)
    with start_embedded(tmp_path / "svc", api_key="k", faults=faults) as svc:
        path = make_config(svc, sweep={"n_trials": 2, "max_retries": 1})
        result = run_sweep(load_config(path), env={"SWEEPER_TEST_KEY": "k"})
        assert len(jobs_at(svc)) == 4
    rows = rows_of(path)
    assert sorted((a.trial_number, a.attempt_no) for a in rows) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(a.error_code == "internal_error" for a in rows)
    finals = [a for a in rows if a.attempt_no == 2]
    assert all(a.trial_state == "FAIL" for a in finals)
    assert result.counts == {"FAIL": 2}
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study_trials(path))


def test_divergence_fails_the_trial_without_retry(
    local_service, service_env, make_config, rows_of, study_trials
):
    """A deterministic failure (diverged training) is not retried; code and message are kept."""
    path = make_config(
        local_service,
        sweep={"n_trials": 1, "max_retries": 2},
        search__learning_rate={"low": 0.5, "high": 0.9, "log": False},
    )
    run_sweep(load_config(path), env=service_env)
    rows = rows_of(path)
    assert len(rows) == 1
    assert rows[0].error_code == "training_diverged"
    assert rows[0].trial_state == "FAIL"
    assert "diverged" in (rows[0].error_message or "")
    assert "diverged" in study_trials(path)[0].user_attrs["fail_reason"]


def test_a_refused_create_repeated_stops_the_sweep(local_service, service_env, make_config):
    """The same provider refusal on two trials stops launching instead of burning n_trials."""
    path = make_config(
        local_service,
        sweep={"n_trials": 6, "max_concurrent": 1},
        job={"training_file": "file-doesnotexist"},
    )
    result = run_sweep(load_config(path), env=service_env)
    assert result.stop_reason and "two trials" in result.stop_reason
    assert result.counts == {"FAIL": 2}
    assert jobs_at(local_service) == []


def test_observer_hears_launches_and_closes(local_service, service_env, make_config):
    """The engine reports each launch and each close to its observer (the CLI renders them)."""
    path = make_config(local_service, sweep={"n_trials": 2})
    rec = Recorder()
    run_sweep(load_config(path), env=service_env, observer=rec)
    kinds = rec.kinds()
    assert kinds["launched"] == 2 and kinds["closed"] == 2


def test_two_runs_on_a_local_sweep_share_one_embedded_service(
    tmp_path, make_config, check_invariants
):
    """Two `sweep run` on one base_url = "local" sweep: the second uses the first's embedded
    service (never a second server on the same folder), and every promise holds."""
    import threading

    from sweeper.engine.prepare import local_state_dir
    from sweeper.local.embedded import start_embedded

    path = make_config(None, sweep={"n_trials": 6, "max_concurrent": 2})
    cfg = load_config(path)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_sweep(load_config(path), env={})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert errors == []
    state = local_state_dir(cfg, {})
    assert not (state / "service.json").exists()  # the owner cleaned up after both
    with start_embedded(state, api_key="k") as svc:  # the same folder, served again
        check_invariants(path, svc.base_url, "k", 6)


def test_embedded_service_is_served_once_per_folder(tmp_path, make_config):
    """While one process part serves a state folder, another gets the same URL and key
    instead of starting a second server; the owner's key is random, not the provider's."""
    from sweeper.engine.prepare import embedded_service

    cfg = load_config(make_config(None))
    with embedded_service(cfg, tmp_path / "state") as (url_a, key_a):
        with embedded_service(cfg, tmp_path / "state") as (url_b, key_b):
            assert (url_b, key_b) == (url_a, key_a)
            with ApiClient(url_b, key_b) as client:
                assert client.list_jobs().data == []
        assert key_a.startswith("sk-local-")
    assert not (tmp_path / "state" / "service.json").exists()
