"""Builds sweep databases for the report tests and bench/bench_compare.py (no tests here).

A sweep is written the way the engine leaves it: the Optuna study (through RDBStorage, bulk
``add_trials``) and sweeper's ``sweep_*`` rows (bulk inserts) in the same SQLite file. Other
modules load this file by path (pytest's importlib mode puts no test folder on sys.path).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session

from sweeper.store.db import ensure_schema
from sweeper.store.models import Attempt, CheckpointRow, EventRow, Sweep, Worker

DISTRIBUTIONS: dict[str, optuna.distributions.BaseDistribution] = {
    "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32, 64]),
    "n_epochs": optuna.distributions.IntDistribution(1, 5),
}
BULK_ABOVE = 100  # more trials than this go in with bulk inserts
NOW = datetime.now(UTC).replace(tzinfo=None)


@dataclass
class FakeTrial:
    state: str  # COMPLETE / PRUNED / FAIL / RUNNING / WAITING
    params: dict[str, Any]
    values: list[float] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # overrides per attempt
    checkpoints: list[tuple[int, float, float | None]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (level, message)


def demo_trials(multi: bool = False) -> list[FakeTrial]:
    """COMPLETE, a retried COMPLETE (best), PRUNED, FAIL, RUNNING, WAITING, COMPLETE [, COMPLETE].

    Single objective: trial 1 is best (0.5). Two objectives (valid_loss, cost; both minimized):
    the Pareto front is trials 0, 1 and 6; trial 7 is dominated by trial 1.
    """
    ck3 = [(10, 1.2, 1.1), (20, 0.9, 0.95), (30, 0.7, 0.8)]
    v = (lambda a, b: [a, b]) if multi else (lambda a, _b: [a])
    trials = [
        FakeTrial("COMPLETE", {"learning_rate": 1e-4, "lora_r": 8, "n_epochs": 3}, v(0.9, 0.4),
                  checkpoints=ck3,
                  events=[("info", "Job is submitted"),
                          ("info", "Training completed successfully")]),
        FakeTrial("COMPLETE", {"learning_rate": 3e-4, "lora_r": 16, "n_epochs": 3}, v(0.5, 3.0),
                  attempts=[{"trial_state": None, "job_status": "failed",
                             "error_code": "server_error", "error_message": "node lost"}, {}],
                  checkpoints=[(10, 1.0, 0.9), (20, 0.6, 0.55), (30, 0.45, 0.5)],
                  events=[("warn", "Node restarted"), ("info", "Training completed successfully")]),
        FakeTrial("PRUNED", {"learning_rate": 1e-5, "lora_r": 32, "n_epochs": 2},
                  attempts=[{"job_status": "cancelled", "pruned": True}],
                  checkpoints=[(10, 2.0, 1.9)]),
        FakeTrial("FAIL", {"learning_rate": 9e-4, "lora_r": 64, "n_epochs": 1},
                  attempts=[{"job_status": "failed", "error_code": "diverged",
                             "error_message": "loss became NaN at step 12"}],
                  events=[("error", "Training failed: loss became NaN")]),
        FakeTrial("RUNNING", {"learning_rate": 2e-4, "lora_r": 16, "n_epochs": 3},
                  checkpoints=[(10, 1.1, 1.0)]),
        FakeTrial("WAITING", {"learning_rate": 5e-5, "lora_r": 8, "n_epochs": 2}),
        FakeTrial("COMPLETE", {"learning_rate": 6e-5, "lora_r": 32, "n_epochs": 4}, v(0.7, 0.5),
                  checkpoints=ck3),
    ]
    if multi:
        trials.append(FakeTrial("COMPLETE", {"learning_rate": 4e-4, "lora_r": 64, "n_epochs": 5},
                                [0.8, 3.5], checkpoints=ck3))
    return trials


def random_trials(n: int, seed: int = 0, multi: bool = False) -> list[FakeTrial]:
    """``n`` trials for benchmarks: mostly COMPLETE, some PRUNED/FAIL, a few in flight."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        params = {"learning_rate": 10 ** rng.uniform(-5, -3), "lora_r": rng.choice([8, 16, 32, 64]),
                  "n_epochs": rng.randint(1, 5)}
        r = rng.random()
        state = ("RUNNING" if i >= n - 4 else "COMPLETE" if r < 0.8 else "PRUNED" if r < 0.93
                 else "FAIL")
        loss = 0.4 + abs(rng.gauss(0, 0.3))
        values = ([loss, rng.uniform(0.1, 5)] if multi else [loss]) if state == "COMPLETE" else None
        steps = [(s, loss + 0.5 / s, loss + 0.6 / s) for s in (1, 2, 3)]
        out.append(FakeTrial(state, params, values,
                             checkpoints=steps[:1] if state == "PRUNED" else steps,
                             events=[("info", "Job is submitted"), ("info", "done")]))
    return out


def build_sweep(
    db_path: Path,
    trials: list[FakeTrial],
    name: str = "demo",
    directions: tuple[str, ...] = ("minimize",),
    stop_reason: str | None = None,
    workers: int = 1,
) -> str:
    """Write the study and the sweep rows into ``db_path``; return its SQLAlchemy URL."""
    global NOW
    NOW = datetime.now(UTC).replace(tzinfo=None)  # "live" heartbeats are live when read
    url = f"sqlite:///{db_path}"
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(directions))
        if len(trials) <= BULK_ABOVE:
            study.add_trials([_frozen(t, i) for i, t in enumerate(trials)])
    finally:
        storage.remove_session()
        storage.engine.dispose()
    engine = create_engine(url)
    try:
        if len(trials) > BULK_ABOVE:
            _bulk_optuna_trials(engine, name, trials)
        ensure_schema(engine)  # the real migrations, as `sweep run` builds it
        with Session(engine) as session, session.begin():
            sweep = Sweep(name=name, study_name=name, config={"sweep": {"name": name}},
                          fingerprint={}, created_at=NOW - timedelta(hours=3),
                          updated_at=NOW, stop_reason=stop_reason)
            session.add(sweep)
            session.flush()
            for w in range(workers):
                session.add(Worker(id=f"w{w}-{name}", sweep_id=sweep.id, hostname="box",
                                   pid=100 + w, started_at=NOW - timedelta(hours=1),
                                   heartbeat_at=NOW - timedelta(seconds=10)))
            session.add(Worker(id=f"old-{name}", sweep_id=sweep.id, hostname="box", pid=99,
                               started_at=NOW - timedelta(hours=3),
                               heartbeat_at=NOW - timedelta(hours=2),
                               stopped_at=NOW - timedelta(hours=2)))
            _insert_attempts(session, sweep.id, name, trials)
    finally:
        engine.dispose()
    return url


def _bulk_optuna_trials(engine: Any, name: str, trials: list[FakeTrial]) -> None:
    """Optuna's own rows for many trials at once (add_trials commits per trial: ~10 ms each)."""
    from optuna.storages._rdb import models as om

    value_type = om.TrialValueModel.TrialValueType.FINITE
    inter_type = om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    with engine.begin() as conn:
        study_id = conn.execute(select(om.StudyModel.study_id)
                                .where(om.StudyModel.study_name == name)).scalar_one()
        conn.execute(insert(om.TrialModel.__table__), [
            {"number": i, "study_id": study_id, "state": optuna.trial.TrialState[t.state],
             "datetime_start": NOW - timedelta(hours=2),
             "datetime_complete": None if t.state in ("RUNNING", "WAITING") else NOW}
            for i, t in enumerate(trials)])
        ids = dict(conn.execute(select(om.TrialModel.number, om.TrialModel.trial_id)
                                .where(om.TrialModel.study_id == study_id)).all())
        params: list[dict[str, Any]] = []
        values: list[dict[str, Any]] = []
        inter: list[dict[str, Any]] = []
        to_json = optuna.distributions.distribution_to_json
        for i, t in enumerate(trials):
            for k, v in t.params.items():
                dist = DISTRIBUTIONS[k]
                params.append({"trial_id": ids[i], "param_name": k,
                               "param_value": dist.to_internal_repr(v),
                               "distribution_json": to_json(dist)})
            if t.state == "COMPLETE":
                values += [{"trial_id": ids[i], "objective": j, "value": v,
                            "value_type": value_type} for j, v in enumerate(t.values or [])]
            inter += [{"trial_id": ids[i], "step": s, "intermediate_value": vl,
                       "intermediate_value_type": inter_type}
                      for s, _tl, vl in t.checkpoints if vl is not None]
        conn.execute(insert(om.TrialParamModel.__table__), params)
        if values:
            conn.execute(insert(om.TrialValueModel.__table__), values)
        if inter:
            conn.execute(insert(om.TrialIntermediateValueModel.__table__), inter)


def _frozen(t: FakeTrial, number: int) -> optuna.trial.FrozenTrial:
    state = optuna.trial.TrialState[t.state]
    return optuna.trial.create_trial(
        state=state,
        params=t.params,
        distributions={k: DISTRIBUTIONS[k] for k in t.params},
        values=t.values if state == optuna.trial.TrialState.COMPLETE else None,
        intermediate_values={s: vl for s, _tl, vl in t.checkpoints if vl is not None},
        user_attrs={"trial": number},
    )


def _insert_attempts(session: Session, sweep_id: int, name: str, trials: list[FakeTrial]) -> None:
    rows: list[dict[str, Any]] = []
    for number, t in enumerate(trials):
        for k, override in enumerate(t.attempts, start=1):
            last = k == len(t.attempts)
            launched = NOW - timedelta(minutes=90 - number % 60, seconds=k * 7)
            finished = launched + timedelta(minutes=12, seconds=number % 50)
            in_flight = t.state in ("RUNNING", "WAITING") and last
            row = {
                "sweep_id": sweep_id, "launch_ref": f"{name}-{number}-{k}",
                "suffix": f"{name}-t{number}-a{k}", "attempt_no": k,
                "state": ("submitted" if in_flight else "closed"),
                "trial_number": number, "trial_id": number + 1,
                "trial_state": None if in_flight or not last else t.state,
                "values": t.values if last else None,
                "params": t.params,
                "hyperparameters": {**t.params, "lora": True, "packing": True},
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "job_id": f"ftjob-{name}-{number:05d}-{k}",
                "job_status": ("queued" if t.state == "WAITING" else "running") if in_flight
                else "succeeded",
                "trained_tokens": 1000 * (number % 7 + 1) if t.state != "WAITING" else 0,
                "trained_steps": 10 if in_flight else 30, "total_steps": 30,
                "error_code": None, "error_message": None, "pruned": False,
                "created_at": launched - timedelta(seconds=3), "launched_at": launched,
                "finished_at": None if in_flight else finished,
                "closed_at": None if in_flight else finished,
            }
            row.update(override)
            rows.append(row)
    session.execute(insert(Attempt), rows)
    ids = dict(session.execute(select(Attempt.launch_ref, Attempt.id)
                               .where(Attempt.sweep_id == sweep_id)).all())
    cks: list[dict[str, Any]] = []
    evs: list[dict[str, Any]] = []
    for number, t in enumerate(trials):
        aid = ids[f"{name}-{number}-{len(t.attempts)}"]
        for step, train, valid in t.checkpoints:
            cks.append({"attempt_id": aid, "checkpoint_id": f"ftckpt_{number}_{step}",
                        "step_number": step, "train_loss": train, "valid_loss": valid,
                        "metrics": {"step": step, "train_loss": train, "valid_loss": valid,
                                    "train_mean_token_accuracy": 0.5,
                                    "valid_mean_token_accuracy": 0.45},
                        "created_at": 1_700_000_000 + step})
        for j, (level, message) in enumerate(t.events):
            evs.append({"attempt_id": aid, "event_id": f"ev_{number}_{j}",
                        "created_at": 1_700_000_000 + j, "level": level, "message": message,
                        "type": "message", "data": None})
    if cks:
        session.execute(insert(CheckpointRow), cks)
    if evs:
        session.execute(insert(EventRow), evs)


# --- shared by the report tests (test files cannot import each other) --------------------------


def write_config(folder: Path, name: str, db: Path, metric: str = '"valid_loss"',
                 direction: str = '"minimize"') -> Path:
    example = '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n'
    (folder / "train.jsonl").write_text(example)
    (folder / "valid.jsonl").write_text(example)
    cfg = folder / f"{name}.toml"
    cfg.write_text(
        f'[sweep]\nname = "{name}"\nstorage = "sqlite:///{db}"\nmetric = {metric}\n'
        f'direction = {direction}\n\n'
        '[job]\nmodel = "meta-llama/Llama-3.1-8B-Instruct"\ntraining_file = "train.jsonl"\n'
        'validation_file = "valid.jsonl"\n\n'
        '[search.learning_rate]\ntype = "float"\nlow = 1e-5\nhigh = 1e-3\nlog = true\n\n'
        "[budget]\nmax_trained_tokens = 100000\nprice_per_million_tokens = 0.4\n"
        "max_failed_trials = 3\n")
    return cfg


def build_multi(folder: Path) -> Path:
    """A two-objective sweep (valid_loss, cost) and its config; the config's path."""
    build_sweep(folder / "m.db", demo_trials(multi=True), name="multi",
                directions=("minimize", "minimize"))
    return write_config(folder, "multi", folder / "m.db", '["valid_loss", "cost"]',
                        '["minimize", "minimize"]')


def invoke(*args: str) -> str:
    """Run a `sweep` command in-process; it must succeed; its output."""
    from click.testing import CliRunner

    from sweeper.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
