"""Several `sweep run` processes share one sweep on the machine's real PostgreSQL: the global
caps hold across them and no job is launched twice."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime

import pytest
from sqlalchemy import select

from sweeper.config import load_config
from sweeper.store.db import make_engine, make_sessionmaker
from sweeper.store.models import Attempt, Worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals]
    level = peak = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        level += step
        peak = max(peak, level)
    return peak


def test_three_workers_on_postgresql_share_the_caps(
    pg_url, service_process, make_config, sweep_cmd, check_invariants
):
    """3 workers, n_trials=9, max_concurrent=3: 9 trials, never more than 3 in flight, no
    duplicate job, and every worker took part."""
    svc = service_process("--step-delay", "0.05", "--max-running", "8")
    path = make_config(
        svc,
        sweep={"n_trials": 9, "max_concurrent": 3, "storage": pg_url, "sampler": "tpe"},
        api={"poll_interval": 0.1},
        job__hyperparameters={"n_epochs": 2},
    )
    env = {**os.environ, "SWEEPER_TEST_KEY": svc.api_key}
    procs = [
        subprocess.Popen(
            [*sweep_cmd, "run", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    check_invariants(path, svc.base_url, svc.api_key, 9)
    engine = make_engine(load_config(path).storage_url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = list(s.scalars(select(Attempt)))
            workers = list(s.scalars(select(Worker)))
    finally:
        engine.dispose()
    # an attempt is in flight from its claim until its job is seen finished
    # workers get distinct sampler seeds: none replays another's samples (which the engine
    # would have had to answer by reusing a result instead of launching)
    assert all(a.reused_from is None and a.job_id for a in rows)
    spans = [(a.created_at, a.finished_at) for a in rows if a.finished_at is not None]
    assert len(spans) == len(rows) == 9
    assert max_overlap(spans) <= 3
    assert len(workers) == 3
    assert len({a.worker_id for a in rows}) >= 2  # the work really was shared
