"""Crashes at the narrow windows of a trial's life, then resume: nothing lost, nothing doubled.

A hook raises a BaseException at a named fault point, which unwinds `sweep run` the way a crash
would (open transactions are rolled back, nothing else runs); the service keeps its jobs, as a
provider would. The same command then resumes on the same database.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from sweeper.api.client import ApiClient
from sweeper.config import load_config
from sweeper.engine.prepare import resolve_storage
from sweeper.engine.service import run_sweep
from sweeper.store.db import make_engine, make_sessionmaker, optuna_storage
from sweeper.store.models import CLOSED, Attempt

POINTS = ["after_claim", "after_ask", "before_post", "after_post", "after_tell"]


class Crash(BaseException):
    """Not an Exception: nothing in sweeper may catch it, as nothing survives a real crash."""


def crash_at(point: str, nth: int = 1) -> Any:
    seen = Counter[str]()

    def hook(name: str, attempt_id: int) -> None:
        seen[name] += 1
        if name == point and seen[name] == nth:
            raise Crash(point)

    return hook


def check_invariants(path: Path, service: Any, n_trials: int) -> None:
    cfg = load_config(path)
    url = resolve_storage(cfg)
    storage = optuna_storage(url)
    try:
        study_trials = optuna.load_study(study_name=cfg.sweep.name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    engine = make_engine(url)
    with make_sessionmaker(engine)() as s:
        rows = list(s.scalars(select(Attempt)))
    engine.dispose()
    with ApiClient(service.base_url, service.api_key) as client:
        jobs = list(client.iter_jobs())
    # exactly n_trials trials, every one finished, in Optuna and in our tables
    assert len(study_trials) == n_trials
    assert all(t.state.is_finished() for t in study_trials)
    assert sorted({a.trial_number for a in rows}) == list(range(n_trials))
    assert all(a.state == CLOSED for a in rows)
    # one job per attempt, and no job that no attempt owns
    suffixes = Counter(j.suffix for j in jobs)
    assert all(n == 1 for n in suffixes.values()), suffixes
    assert {a.job_id for a in rows if a.job_id} == {j.id for j in jobs}
    assert all(j.is_terminal for j in jobs)


@pytest.mark.parametrize("point", POINTS)
def test_crash_then_resume_keeps_the_invariants(point, local_service, service_env, make_config):
    """A crash at each fault point, then the same command: n trials, one job per attempt."""
    path = make_config(local_service, sweep={"n_trials": 3, "max_concurrent": 2})
    with pytest.raises(Crash):
        run_sweep(load_config(path), env=service_env, hook=crash_at(point, nth=2))
    result = run_sweep(load_config(path), env=service_env)
    assert not result.interrupted
    check_invariants(path, local_service, 3)


def test_crash_after_post_reattaches_instead_of_relaunching(
    local_service, service_env, make_config
):
    """The job created just before the crash is found by its suffix and adopted, not re-sent."""
    path = make_config(local_service, sweep={"n_trials": 1})
    with pytest.raises(Crash):
        run_sweep(load_config(path), env=service_env, hook=crash_at("after_post"))
    events: list[str] = []
    run_sweep(
        load_config(path), env=service_env, observer=lambda kind, **_: events.append(kind)
    )
    assert "reattached" in events and "launched" in events
    check_invariants(path, local_service, 1)


def test_repeated_crashes_at_every_point(local_service, service_env, make_config):
    """Crashing at every point in turn, six trials still end exactly as six, each closed once."""
    path = make_config(local_service, sweep={"n_trials": 6, "max_concurrent": 2})
    crashes = 0
    for point in POINTS * 2:
        try:
            run_sweep(load_config(path), env=service_env, hook=crash_at(point))
        except Crash:
            crashes += 1
    assert crashes >= 8  # the sweep really was interrupted at (nearly) every point
    run_sweep(load_config(path), env=service_env)
    check_invariants(path, local_service, 6)
