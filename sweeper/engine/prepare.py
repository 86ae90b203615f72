"""Everything `sweep run` does before the loop, in the order that keeps bad input cheap.

1. checks that spend nothing and write nothing: secrets, datasets, evaluator, sampler;
2. storage: schema, the sweep row (a resumed sweep must match its config), this worker;
3. Optuna's study on the same storage; the provider (or the embedded local service);
4. datasets uploaded once per (provider, content hash).

``run_sweep`` owns every resource it opens and closes them all, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sweeper.config import Config
from sweeper.datasets import DatasetInfo, inspect_dataset
from sweeper.errors import ConfigChanged, ConfigError, StoreError, SweeperError
from sweeper.store.models import Sweep

log = logging.getLogger("sweeper.engine")

SWEEPER_HOME_ENV = "SWEEPER_HOME"


@dataclass(frozen=True)
class Checked:
    """The outcome of the checks that spend nothing."""

    api_key: str | None
    secrets: dict[str, str]  # env var name -> value, for integrations
    training: DatasetInfo | None  # None when the config names an uploaded file id
    validation: DatasetInfo | None
    evaluator: Callable[[dict[str, Any]], Any] | None


def check_inputs(cfg: Config, env: Mapping[str, str]) -> Checked:
    """Every check that needs no database and no network. Raises ConfigError naming the file."""
    source = str(cfg.path)
    try:
        api_key = env.get(cfg.api.api_key_env) or None
        if api_key is None and not cfg.is_local:
            raise ConfigError(
                f"api.api_key_env: the environment variable {cfg.api.api_key_env} is not set "
                "(it holds the provider's API key)"
            )
        secrets: dict[str, str] = {}
        # OpenAI keeps the W&B key in the organisation's settings: nothing to send
        needs_wandb_key = cfg.api.provider == "nebius"
        for i, integration in enumerate(cfg.job.integrations if needs_wandb_key else []):
            name = integration.wandb.api_key_env
            value = env.get(name)
            if not value:
                raise ConfigError(
                    f"job.integrations[{i}].wandb.api_key_env: the environment variable "
                    f"{name} is not set"
                )
            secrets[name] = value
        training = _dataset(cfg, cfg.job.training_file, "job.training_file")
        validation = (
            _dataset(cfg, cfg.job.validation_file, "job.validation_file")
            if cfg.job.validation_file
            else None
        )
        evaluator = None
        if cfg.objective.evaluator:
            from sweeper.engine.objective import load_evaluator

            evaluator = load_evaluator(cfg.objective.evaluator)
        from sweeper.engine.study import make_pruner, make_sampler

        try:  # e.g. gp without torch, bad sampler_options
            _ask_once_in_memory(cfg, make_sampler(cfg, cfg.sweep.seed))
        except (TypeError, ValueError) as exc:  # optuna checks some options' values late
            raise ConfigError(f"sweep.sampler_options: {exc}") from exc
        try:
            make_pruner(cfg)
        except ValueError as exc:
            raise ConfigError(f"pruning: {exc}") from exc
    except ConfigError as exc:
        if exc.source is None:
            raise ConfigError(exc.problems, source=source) from exc
        raise
    return Checked(api_key, secrets, training, validation, evaluator)


def _ask_once_in_memory(cfg: Config, sampler: Any) -> None:
    """Some sampler options are first used at the first ask (TPE's n_startup_trials = "3"
    fails there): ask once in an in-memory study, before the database and the uploads."""
    import optuna

    from sweeper.engine.study import directions, distributions, quiet_optuna

    quiet_optuna()  # no "A new study created in memory" line on the terminal
    study = optuna.create_study(sampler=sampler, directions=directions(cfg))
    study.ask(distributions(cfg))


def _dataset(cfg: Config, value: str, field: str) -> DatasetInfo | None:
    if cfg.is_file_id(value):
        return None
    return inspect_dataset(cfg.resolve(value), field=field)


def sweeper_home(env: Mapping[str, str]) -> Path:
    if env.get(SWEEPER_HOME_ENV):
        return Path(env[SWEEPER_HOME_ENV])
    import click

    return Path(click.get_app_dir("sweeper"))


def local_state_dir(cfg: Config, env: Mapping[str, str]) -> Path:
    """The embedded service keeps its state beside the sweep's SQLite file (or in SWEEPER_HOME)."""
    db = cfg.sqlite_path
    if db is not None:
        db = db if db.is_absolute() else cfg.folder / db
        return db.parent / f"{db.stem}.local-service"
    return sweeper_home(env) / "local-service"


# --- the sweep row ----------------------------------------------------------------------------


def public_config(cfg: Config) -> dict[str, Any]:
    """The config as stored: it names environment variables, never their values."""
    data = cfg.model_dump(mode="json", exclude={"path", "source_text"})
    return json.loads(json.dumps(data))  # type: ignore[no-any-return]


def diff_fingerprints(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff_fingerprints(a, b, where + ".")
        elif a != b:
            lines.append(f"{where}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines


def open_sweep_row(Session: sessionmaker[Session], cfg: Config, *, allow_change: bool) -> Sweep:
    from sweeper.store import queries as q
    from sweeper.store.db import transaction

    fingerprint = json.loads(json.dumps(cfg.fingerprint()))
    for _ in range(2):
        try:
            with transaction(Session) as s:
                sweep = q.get_sweep(s, cfg.sweep.name)
                if sweep is None:
                    return q.create_sweep(s, cfg.sweep.name, public_config(cfg), fingerprint)
                changes = diff_fingerprints(sweep.fingerprint, fingerprint)
                if changes and not allow_change:
                    raise ConfigChanged(
                        [
                            f"sweep '{cfg.sweep.name}' was started with another configuration; "
                            "rerun with --allow-config-change to accept:",
                            *changes,
                        ],
                        source=str(cfg.path),
                    )
                if changes:
                    sweep.fingerprint = fingerprint
                    sweep.config = public_config(cfg)
                sweep.updated_at = q.utcnow()
                sweep.stop_reason = None
                return sweep
        except StoreError as exc:  # another worker created it at the same moment: load it
            if not isinstance(exc.__cause__, IntegrityError):
                raise
    raise ConfigError(f"sweep.name: could not create sweep {cfg.sweep.name!r}")


# --- the provider -----------------------------------------------------------------------------


@contextlib.contextmanager
def provider(
    cfg: Config, api_key: str | None, env: Mapping[str, str]
) -> Iterator[tuple[str, str | None, str]]:
    """(base URL, key, cache key for uploads); for "local", the embedded service."""
    if not cfg.is_local:
        yield cfg.api.base_url, api_key, cfg.api.base_url
        return
    state = local_state_dir(cfg, env)
    with embedded_service(cfg, state) as (base_url, key):
        yield base_url, key, f"local:{state.resolve()}"


SERVICE_LOCK = "service.lock"
SERVICE_INFO = "service.json"
SERVICE_USERS = "service.users"


@contextlib.contextmanager
def embedded_service(cfg: Config, state: Path) -> Iterator[tuple[str, str]]:
    """The local service on ``state``: started here, or the one another process runs.

    Exactly one process may serve a state folder (two would both resume its running jobs), so
    the first takes an exclusive lock on it and leaves its URL and its own random key (never a
    provider key) in a 0600 file; `sweep run` workers, `cancel` and `gc` that come later use
    that service.
    """
    import fcntl
    import secrets

    state.mkdir(parents=True, exist_ok=True)
    lock = (state / SERVICE_LOCK).open("a+")
    users = (state / SERVICE_USERS).open("a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(users, fcntl.LOCK_SH)  # the owner stays up while we use its service
            yield _running_service(state)
            return
        from sweeper.local.embedded import start_embedded
        from sweeper.local.faults import FaultConfig

        local = cfg.api.local
        service = start_embedded(
            state,
            api_key=f"sk-local-{secrets.token_hex(16)}",
            faults=FaultConfig(step_delay=local.step_delay),
            max_running=local.max_running,
        )
        info = state / SERVICE_INFO
        try:
            fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"base_url": service.base_url, "api_key": service.api_key}, f)
            yield service.base_url, service.api_key
        finally:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning(
                    "the local service stays up until the other sweep processes using it end"
                )
                fcntl.flock(users, fcntl.LOCK_EX)
            info.unlink(missing_ok=True)
            service.stop()
    finally:
        users.close()
        lock.close()  # closing releases the locks


def _running_service(state: Path, wait: float = 10.0) -> tuple[str, str]:
    """URL and key of the service another process runs on ``state`` (it may be starting)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            data = json.loads((state / SERVICE_INFO).read_text())
            return str(data["base_url"]), str(data["api_key"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise SweeperError(
                    f"another process holds the local service's folder {state} but does not "
                    "say where it listens; stop it or remove its lock"
                ) from None
            time.sleep(0.05)


def upload_once(
    client: Any, Session: sessionmaker[Session], cache_key: str, info: DatasetInfo
) -> str:
    """The provider's file id for a dataset, uploading it only if this provider lacks it."""
    from sweeper.errors import ApiNotFound
    from sweeper.store import queries as q
    from sweeper.store.db import transaction

    with transaction(Session) as s:
        row = q.cached_file(s, cache_key, info.sha256)
        cached = (row.id, row.file_id) if row is not None else None
    if cached is not None:
        try:
            client.retrieve_file(cached[1])
            return cached[1]
        except ApiNotFound:
            with transaction(Session) as s:
                q.forget_file(s, cached[0])
    uploaded = client.upload_file(info.path)
    try:
        with transaction(Session) as s:
            q.remember_file(
                s,
                base_url=cache_key,
                sha256=info.sha256,
                file_id=uploaded.id,
                filename=info.path.name,
                bytes=info.bytes,
                n_examples=info.n_examples,
                n_tokens=info.n_tokens,
            )
    except Exception:  # another worker cached the same content first: use theirs
        with transaction(Session) as s:
            row = q.cached_file(s, cache_key, info.sha256)
            if row is not None:
                return row.file_id
        raise
    return str(uploaded.id)
