"""Fixtures shared by all test files."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

# -- databases (store layer) --------------------------------------------------------------------
# `sqlite_url`: a SQLite file in the test's tmp_path. `pg_url`: a fresh, empty database on the
# PostgreSQL server named by SWEEPER_TEST_POSTGRES_URL, dropped afterwards; skipped when unset.

PG_URL_ENV = "SWEEPER_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a not-yet-existing SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'sweeps.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database of its own, dropped after the test."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"set {PG_URL_ENV} to run the PostgreSQL tests")
    url = sa.make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    name = f"sweeper_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# -- sweeps (engine layer) ----------------------------------------------------------------------
# `local_service`: the local fine-tuning service on a free loopback port (real HTTP), with its own
# key. `make_config`: writes a sweep TOML into tmp_path that points at it, tiny data, SQLite file.

DATA = Path(__file__).parent / "data"


@pytest.fixture
def local_service(tmp_path: Path) -> Iterator[object]:
    from sweeper.local.embedded import start_embedded

    with start_embedded(tmp_path / "service", api_key="sk-test-" + secrets.token_hex(8)) as svc:
        yield svc


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_toml(sections: dict[str, dict[str, object]]) -> str:
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_config(service, **section_overrides) -> Path of a small sweep's TOML file."""
    import shutil

    shutil.copy(DATA / "tiny_train.jsonl", tmp_path / "train.jsonl")
    shutil.copy(DATA / "tiny_valid.jsonl", tmp_path / "valid.jsonl")

    def make(
        service: object | None = None, name: str = "sweep.toml", **over: dict[str, object]
    ) -> Path:
        sections: dict[str, dict[str, object]] = {
            "sweep": {
                "name": "t",
                "storage": "sqlite:///sweeps.db",
                "n_trials": 4,
                "max_concurrent": 2,
                "sampler": "random",
                "seed": 1,
            },
            "api": {
                "base_url": getattr(service, "base_url", "local"),
                "poll_interval": 0.1,
                "api_key_env": "SWEEPER_TEST_KEY",
            },
            "job": {
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "training_file": "train.jsonl",
                "validation_file": "valid.jsonl",
                "seed": 3,
            },
            "job.hyperparameters": {"lora": True, "batch_size": 8, "n_epochs": 1},
            "search.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "search.lora_r": {"type": "categorical", "choices": [8, 16]},
        }
        for section, values in over.items():
            key = section.replace("__", ".")
            if values is None:
                sections.pop(key, None)
            elif "type" in values:  # a search space of another type replaces the old one
                sections[key] = dict(values)
            else:
                sections[key] = {**sections.get(key, {}), **values}
        path = tmp_path / name
        path.write_text(render_toml(sections))
        return path

    return make


@pytest.fixture
def service_env(local_service: object) -> dict[str, str]:
    return {"SWEEPER_TEST_KEY": local_service.api_key}  # type: ignore[attr-defined]


# -- processes (crash and multi-worker suites) --------------------------------------------------
# `ServiceProcess`: `sweep serve` in its own process (SIGKILL-able, restartable on the same folder
# and port). `sweep_cmd`: the argv of `sweep` in this venv. `check_invariants`: the promises of
# DESIGN.md after a sweep: exactly n trials, all closed once, one job per attempt, none running.


class ServiceProcess:
    LINE = "sweeper local service listening on "

    def __init__(self, state_dir: Path, *flags: str, api_key: str = "sk-proc-test") -> None:
        self.state_dir = state_dir
        self.flags = flags
        self.api_key = api_key
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> ServiceProcess:
        cmd = [*sweep_argv(), "serve", "--port", str(self.port), "--state-dir",
               str(self.state_dir), "--api-key", self.api_key, *self.flags]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(self.LINE), f"unexpected first line {line!r}"
        self.base_url = line[len(self.LINE) :].strip()
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.proc = None


def sweep_argv() -> list[str]:
    return [sys.executable, "-c", "from sweeper.cli import main; main()"]


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Any]:
    started: list[ServiceProcess] = []

    def start(*flags: str) -> ServiceProcess:
        svc = ServiceProcess(tmp_path / "service-proc", *flags).start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.kill()


def _check_invariants(path: Path, base_url: str, api_key: str, n_trials: int) -> None:
    import optuna
    from sqlalchemy import select

    from sweeper.api.client import ApiClient
    from sweeper.config import load_config
    from sweeper.store.db import make_engine, make_sessionmaker, optuna_storage
    from sweeper.store.models import CLOSED, Attempt, CheckpointRow

    cfg = load_config(path)
    url = cfg.storage_url
    storage = optuna_storage(url)
    try:
        study_trials = optuna.load_study(study_name=cfg.sweep.name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = list(s.scalars(select(Attempt)))
    finally:
        engine.dispose()
    with ApiClient(base_url, api_key) as client:
        jobs = list(client.iter_jobs())
    # exactly n_trials trials, every one finished, in Optuna and in our tables
    assert len(study_trials) == n_trials, [t.state for t in study_trials]
    assert all(t.state.is_finished() for t in study_trials)
    assert sorted({a.trial_number for a in rows}) == list(range(n_trials))
    assert all(a.state == CLOSED for a in rows), [(a.trial_number, a.state) for a in rows]
    # one job per attempt, no job that no attempt owns, none left running
    suffixes = Counter(j.suffix for j in jobs)
    assert all(n == 1 for n in suffixes.values()), suffixes
    assert {a.job_id for a in rows if a.job_id} == {j.id for j in jobs}
    assert all(j.is_terminal for j in jobs), [j.status for j in jobs]
    # no metric lost: every succeeded job's checkpoints are stored (one per epoch) and its
    # trial's value is the last checkpoint's valid_loss
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            for a in rows:
                if a.job_status != "succeeded" or a.trial_state != "COMPLETE":
                    continue
                kept = list(
                    s.scalars(
                        select(CheckpointRow)
                        .where(CheckpointRow.attempt_id == a.id)
                        .order_by(CheckpointRow.step_number)
                    )
                )
                epochs = int((a.hyperparameters or {}).get("n_epochs") or 3)
                assert len(kept) == epochs, (a.trial_number, len(kept), epochs)
                assert a.values == [kept[-1].valid_loss]
    finally:
        engine.dispose()


@pytest.fixture
def check_invariants() -> Any:
    return _check_invariants


@pytest.fixture
def sweep_cmd() -> list[str]:
    """argv prefix that runs this checkout's `sweep` in this interpreter."""
    return sweep_argv()


def _attempt_rows(path: Path) -> list[Any]:
    from sqlalchemy import select

    from sweeper.config import load_config
    from sweeper.store.db import make_engine, make_sessionmaker
    from sweeper.store.models import Attempt

    engine = make_engine(load_config(path).storage_url)
    try:
        with make_sessionmaker(engine)() as s:
            return list(s.scalars(select(Attempt).order_by(Attempt.id)))
    finally:
        engine.dispose()


def _study_trials(path: Path) -> list[Any]:
    import optuna

    from sweeper.config import load_config
    from sweeper.store.db import optuna_storage

    cfg = load_config(path)
    storage = optuna_storage(cfg.storage_url)
    try:
        return optuna.load_study(study_name=cfg.sweep.name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


@pytest.fixture
def rows_of() -> Any:
    """rows_of(config_path) -> the sweep's attempt rows, oldest first."""
    return _attempt_rows


@pytest.fixture
def study_trials() -> Any:
    """study_trials(config_path) -> the Optuna study's trials."""
    return _study_trials
