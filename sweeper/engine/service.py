"""The two things `sweep run` can do: run (or resume) a sweep, or plan it without spending."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sweeper.config import Config
from sweeper.engine.prepare import (
    Checked,
    check_inputs,
    open_sweep_row,
    provider,
    upload_once,
)
from sweeper.engine.runner import Files, Hook, Observer, Runner, RunOptions, RunResult, _silent
from sweeper.errors import SweeperError


def run_sweep(
    cfg: Config,
    *,
    env: Mapping[str, str],
    n_trials: int | None = None,
    max_concurrent: int | None = None,
    allow_config_change: bool = False,
    cancel_on_exit: bool = False,
    observer: Observer = _silent,
    hook: Hook | None = None,
    lease: timedelta | None = None,
) -> RunResult:
    """Start or resume the sweep; returns when every trial is closed or a budget stops it."""
    checked = check_inputs(cfg, env)  # nothing spent, nothing written before this passes
    opts = run_options(
        cfg,
        n_trials=n_trials,
        max_concurrent=max_concurrent,
        cancel_on_exit=cancel_on_exit,
        lease=lease,
    )
    with open_runner(
        cfg, env, checked, opts, create=True, allow_config_change=allow_config_change,
        observer=observer, hook=hook,
    ) as runner:  # fmt: skip
        result = runner.run()
        result.requests = dict(runner.client.stats)
        if not result.interrupted and result.stop_reason is None:
            runner.mark_finished()
        return result


def run_options(
    cfg: Config,
    *,
    n_trials: int | None = None,
    max_concurrent: int | None = None,
    cancel_on_exit: bool = False,
    lease: timedelta | None = None,
) -> RunOptions:
    """The config's caps, overridden from the command line; a worker silent for the lease
    (at least 2 minutes, or 4 polls) is taken for dead."""
    return RunOptions(
        n_trials=n_trials or cfg.sweep.n_trials,
        max_concurrent=max_concurrent or cfg.sweep.max_concurrent,
        cancel_on_exit=cancel_on_exit,
        lease=lease or timedelta(seconds=max(120.0, 4 * cfg.api.poll_interval)),
    )


@contextlib.contextmanager
def open_runner(
    cfg: Config,
    env: Mapping[str, str],
    checked: Checked,
    opts: RunOptions,
    *,
    create: bool,
    allow_config_change: bool = False,
    observer: Observer = _silent,
    hook: Hook | None = None,
) -> Iterator[Runner]:
    """A worker on the sweep with everything it needs open; all of it closed on exit.

    ``create=False`` (cancel, gc) needs an existing sweep and writes no schema.
    """
    from sweeper.api.client import ApiClient
    from sweeper.engine.study import open_study, quiet_optuna
    from sweeper.store import queries as q
    from sweeper.store.db import (
        ensure_schema,
        make_engine,
        make_sessionmaker,
        optuna_storage,
        transaction,
        write_transaction,
    )

    quiet_optuna()
    url = cfg.storage_url
    if not create and cfg.sqlite_path is not None and not Path(url[len("sqlite:///") :]).exists():
        raise SweeperError(f"no database at {url}; run `sweep run {cfg.path}` first")
    engine = make_engine(url)
    storage = None
    try:
        ensure_schema(engine, create=create)
        Session = make_sessionmaker(engine)
        if create:
            sweep = open_sweep_row(Session, cfg, allow_change=allow_config_change)
        else:
            with transaction(Session) as s:
                found = q.get_sweep(s, cfg.sweep.name)
            if found is None:
                raise SweeperError(f"no sweep named {cfg.sweep.name!r} in {cfg.sweep.storage}")
            sweep = found
        # under the sweep lock, so workers starting together get distinct ordinals (and seeds)
        with write_transaction(Session, sweep.id) as s:
            worker_id, ordinal = q.register_worker(s, sweep.id)
        # each worker and each resume samples a fresh stream: a restarted sampler must not
        # replay the random start of an earlier run
        seed = None if cfg.sweep.seed is None else (cfg.sweep.seed + 7919 * ordinal) % 2**32
        storage = optuna_storage(url)
        study = open_study(cfg, storage, seed)
        observer("started", sweep=cfg.sweep.name, storage=url, worker=worker_id,
                 resumed=ordinal > 0)  # fmt: skip
        with (
            provider(cfg, checked.api_key, env) as (base_url, key, cache_key),
            ApiClient(
                base_url,
                key,
                timeout=cfg.api.request_timeout,
                retry_timeout=cfg.api.max_retry_time,
                project=cfg.api.ai_project_id,
            ) as client,
        ):
            files = (
                _files(cfg, client, Session, cache_key, checked)
                if create
                else Files(training_file="", validation_file=None, tokens_per_epoch=0)
            )
            runner = Runner(
                cfg=cfg,
                opts=opts,
                client=client,
                session_factory=Session,
                study=study,
                sweep=sweep,
                worker_id=worker_id,
                files=files,
                secrets=checked.secrets,
                observer=observer,
                hook=hook,
                evaluator=checked.evaluator,
            )
            try:
                yield runner
            finally:
                runner.retire()
    finally:
        if storage is not None:
            storage.engine.dispose()
        engine.dispose()


def _files(cfg: Config, client: Any, Session: Any, cache_key: str, checked: Any) -> Files:
    def file_id(info: Any, value: str | None) -> str | None:
        if value is None:
            return None
        return value if info is None else upload_once(client, Session, cache_key, info)

    training = file_id(checked.training, cfg.job.training_file)
    assert training is not None
    per_epoch = checked.training.n_tokens if checked.training is not None else 0
    return Files(
        training_file=training,
        validation_file=file_id(checked.validation, cfg.job.validation_file),
        tokens_per_epoch=per_epoch,
    )


# --- dry run ----------------------------------------------------------------------------------


@dataclass
class Plan:
    trials: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_epoch: int | None = None
    total_tokens: int | None = None
    total_cost: float | None = None
    price_per_million_tokens: float = 0.0
    n_examples: int | None = None
    notes: list[str] = field(default_factory=list)


def plan_sweep(cfg: Config, *, env: Mapping[str, str], n_trials: int | None = None) -> Plan:
    """Validate everything and sample the trials a run would launch; nothing is written."""
    checked = check_inputs(cfg, env)
    import optuna

    from sweeper.engine.study import (
        directions,
        distributions,
        grid_points,
        make_sampler,
        quiet_optuna,
    )

    quiet_optuna()
    count = n_trials or cfg.sweep.n_trials
    plan = Plan(price_per_million_tokens=cfg.price_per_million_tokens)
    study = optuna.create_study(
        sampler=make_sampler(cfg, cfg.sweep.seed), directions=directions(cfg)
    )
    queue = [dict(p) for p in cfg.sweep.enqueue]
    if cfg.sweep.sampler == "grid":
        points = grid_points(cfg)
        if len(points) < count:
            count = len(points)
            plan.notes.append(f"the grid has {len(points)} points: the sweep runs {count} trials")
        queue += points
    for point in queue[:count]:
        study.enqueue_trial(point)
    dists = distributions(cfg)
    tokens = checked.training.n_tokens if checked.training is not None else None
    plan.tokens_per_epoch = tokens
    plan.n_examples = checked.training.n_examples if checked.training is not None else None
    total = 0
    for _ in range(count):
        trial = study.ask(dists)
        params = dict(trial.params)
        hps = {**cfg.job.hyperparameters, **{k: v for k, v in params.items() if k != "model"}}
        epochs = int(hps.get("n_epochs") or 3)
        est = None if tokens is None else math.ceil(tokens * epochs)
        if est is not None:
            total += est
        plan.trials.append({"number": trial.number, "params": params, "estimated_tokens": est})
        # tell a neutral value so the sampler moves on as it would between real trials
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    if tokens is not None:
        plan.total_tokens = total
        plan.total_cost = total / 1e6 * cfg.price_per_million_tokens
    else:
        plan.notes.append("training_file is an uploaded file id: tokens cannot be estimated")
    if cfg.budget.max_trained_tokens is not None and total > cfg.budget.max_trained_tokens:
        plan.notes.append(
            f"budget.max_trained_tokens ({cfg.budget.max_trained_tokens:,}) stops the sweep "
            "before every trial runs"
        )
    return plan
