"""Fixtures shared by all test files."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

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

    def make(service: object | None = None, name: str = "sweep.toml", **over: dict[str, object]) -> Path:
        sections: dict[str, dict[str, object]] = {
            "sweep": {"name": "t", "storage": "sqlite:///sweeps.db", "n_trials": 4,
                      "max_concurrent": 2, "sampler": "random", "seed": 1},
            "api": {"base_url": getattr(service, "base_url", "local"), "poll_interval": 0.1,
                    "api_key_env": "SWEEPER_TEST_KEY"},
            "job": {"model": "meta-llama/Llama-3.1-8B-Instruct", "training_file": "train.jsonl",
                    "validation_file": "valid.jsonl", "seed": 3},
            "job.hyperparameters": {"lora": True, "batch_size": 8, "n_epochs": 1},
            "search.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "search.lora_r": {"type": "categorical", "choices": [8, 16]},
        }
        for section, values in over.items():
            key = section.replace("__", ".")
            if values is None:
                sections.pop(key, None)
            else:
                sections[key] = {**sections.get(key, {}), **values}
        path = tmp_path / name
        path.write_text(render_toml(sections))
        return path

    return make


@pytest.fixture
def service_env(local_service: object) -> dict[str, str]:
    return {"SWEEPER_TEST_KEY": local_service.api_key}  # type: ignore[attr-defined]
