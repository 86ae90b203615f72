"""`sweep cancel` and `sweep gc`: act on a sweep's jobs at the provider from outside the loop."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sweeper.api.models import Job
from sweeper.config import Config
from sweeper.engine.prepare import check_inputs
from sweeper.engine.runner import CANCELLED_BY_USER
from sweeper.engine.service import open_runner, run_options


def cancel_sweep(
    cfg: Config, *, env: Mapping[str, str], trial: int | None = None
) -> list[tuple[int | None, str]]:
    """Cancel the jobs in flight (all, or one trial's) and close their trials.

    Cancelling the whole sweep also stops its running workers from launching more; the next
    `sweep run` lifts that stop.
    """
    from sweeper.store.db import transaction
    from sweeper.store.models import Sweep

    checked = check_inputs(cfg, env)
    with open_runner(cfg, env, checked, run_options(cfg), create=False) as runner:
        if trial is None:
            with transaction(runner.Session) as s:
                row = s.get(Sweep, runner.sweep.id)
                if row is not None:
                    row.stop_reason = CANCELLED_BY_USER
        return runner.cancel_in_flight(reason="cancelled by user", trial=trial, everyone=True)


@dataclass(frozen=True)
class Orphan:
    job: Job
    cancelled: bool


def suffix_pattern(sweep_name: str) -> re.Pattern[str]:
    """The suffixes this sweep gives its jobs (see store.queries.make_suffix)."""
    return re.compile(rf"^sw-{re.escape(sweep_name)}-t\d*-[0-9a-f]{{12}}$")


def gc_sweep(
    cfg: Config, *, env: Mapping[str, str], cancel: bool = False, max_pages: int = 50
) -> list[Orphan]:
    """Provider jobs that carry this sweep's suffix but that no attempt owns; cancel if asked."""
    from sqlalchemy import select

    from sweeper.errors import ApiRejected
    from sweeper.store.db import transaction
    from sweeper.store.models import Attempt

    checked = check_inputs(cfg, env)
    pattern = suffix_pattern(cfg.sweep.name)
    with open_runner(cfg, env, checked, run_options(cfg), create=False) as runner:
        with transaction(runner.Session) as s:
            owned = set(
                s.scalars(
                    select(Attempt.job_id).where(
                        Attempt.sweep_id == runner.sweep.id, Attempt.job_id.is_not(None)
                    )
                )
            )
        orphans = []
        for job in runner.client.iter_jobs(max_pages=max_pages):
            suffix = job.suffix or job.user_provided_suffix or ""
            if job.id in owned or not pattern.match(suffix):
                continue
            done = False
            if cancel and not job.is_terminal:
                try:
                    runner.client.cancel_job(job.id)
                    done = True
                except ApiRejected:  # it finished meanwhile
                    done = False
            orphans.append(Orphan(job, done))
        return orphans
