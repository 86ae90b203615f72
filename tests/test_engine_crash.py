"""Crashes at the narrow windows of a trial's life, then resume: nothing lost, nothing doubled.

A hook raises a BaseException at a named fault point, which unwinds `sweep run` the way a crash
would (open transactions are rolled back, nothing else runs); the service keeps its jobs, as a
provider would. The same command then resumes on the same database.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sweeper.config import load_config
from sweeper.engine.service import run_sweep

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


@pytest.mark.parametrize("point", POINTS)
def test_crash_then_resume_keeps_the_invariants(
    point, local_service, service_env, make_config, check_invariants
):
    """A crash at each fault point, then the same command: n trials, one job per attempt."""
    path = make_config(local_service, sweep={"n_trials": 3, "max_concurrent": 2})
    with pytest.raises(Crash):
        run_sweep(load_config(path), env=service_env, hook=crash_at(point, nth=2))
    result = run_sweep(load_config(path), env=service_env)
    assert not result.interrupted
    check_invariants(path, local_service.base_url, local_service.api_key, 3)


def test_crash_after_post_reattaches_instead_of_relaunching(
    local_service, service_env, make_config, check_invariants
):
    """The job created just before the crash is found by its suffix and adopted, not re-sent."""
    path = make_config(local_service, sweep={"n_trials": 1})
    with pytest.raises(Crash):
        run_sweep(load_config(path), env=service_env, hook=crash_at("after_post"))
    events: list[str] = []
    run_sweep(load_config(path), env=service_env, observer=lambda kind, **_: events.append(kind))
    assert "reattached" in events and "launched" in events
    check_invariants(path, local_service.base_url, local_service.api_key, 1)


def test_repeated_crashes_at_every_point(local_service, service_env, make_config, check_invariants):
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
    check_invariants(path, local_service.base_url, local_service.api_key, 6)
