"""Sweeps through a misbehaving provider: 500s, dropped connections, 429s, latency and failing
jobs together. Transient faults never fail a trial; failed jobs are retried as configured."""

from __future__ import annotations

import threading
from datetime import datetime

from sweeper.config import load_config
from sweeper.engine.service import run_sweep
from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.store.models import Attempt


def test_sweep_completes_through_every_fault_at_once(
    tmp_path, make_config, check_invariants, rows_of
):
    """With 10% 500s, 5% drops, an 8 rps limit, latency and 50% job failures, the sweep ends
    with n trials, one job per attempt, and only job failures (never API faults) on trials.

    Job failures are random per job id: with 10+ jobs, P(none at all) is below 0.1%."""
    faults = FaultConfig(
        error_rate=0.1,
        drop_rate=0.05,
        rate_limit=8.0,
        latency=0.01,
        job_failure_rate=0.5,
        seed=11,
    )
    with start_embedded(tmp_path / "svc", api_key="k", faults=faults) as svc:
        path = make_config(
            svc,
            sweep={"n_trials": 10, "max_concurrent": 4, "max_retries": 2},
            api={"poll_interval": 0.1},
        )
        result = run_sweep(load_config(path), env={"SWEEPER_TEST_KEY": "k"})
        injected = dict(svc.gate.injected)
        check_invariants(path, svc.base_url, "k", 10)
    assert result.stop_reason is None
    rows = rows_of(path)
    # faults really happened: some requests failed and some jobs failed
    assert any(a.error_code == "internal_error" for a in rows)
    assert injected.get("500") and injected.get("drop") and injected.get("429")  # all survived
    for a in rows:
        assert a.error_code in (None, "internal_error"), a.error_message
    retried = {a.trial_number for a in rows if a.attempt_no > 1}
    assert retried  # a provider-side job failure got another attempt
    finals: dict[int, Attempt] = {}
    for a in rows:
        assert a.trial_number is not None
        if a.trial_number not in finals or a.attempt_no > finals[a.trial_number].attempt_no:
            finals[a.trial_number] = a
    for a in finals.values():
        # a trial fails only after its retries are used up
        assert a.trial_state == "COMPLETE" or a.attempt_no == 3


def test_two_workers_on_one_sqlite_sweep_keep_the_caps(
    local_service, service_env, make_config, rows_of
):
    """A second `sweep run` on the same SQLite sweep cooperates: n_trials and max_concurrent
    hold across both, and neither sees 'database is locked'."""
    path = make_config(
        local_service,
        sweep={"n_trials": 8, "max_concurrent": 2},
        job__hyperparameters={"n_epochs": 2},
    )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_sweep(load_config(path), env=service_env)
        except BaseException as exc:  # reported below, with the test's own assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert errors == []
    rows = rows_of(path)
    assert len(rows) == 8 and len({a.trial_number for a in rows}) == 8
    spans: list[tuple[datetime, int]] = []
    for a in rows:
        assert a.finished_at is not None
        spans += [(a.created_at, 1), (a.finished_at, -1)]
    level = peak = 0
    for _, step in sorted(spans, key=lambda p: (p[0], p[1])):
        level += step
        peak = max(peak, level)
    assert peak <= 2
