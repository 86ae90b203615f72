"""Engines, sessions, locks and schema of sweeper's database.

One storage URL serves both sweeper and Optuna: our tables are prefixed ``sweep_`` and our
Alembic keeps its revision in ``sweep_alembic_version``; Optuna keeps its own tables and its own
``alembic_version``. Only SQLite files and PostgreSQL (psycopg 3) are supported.

Transactions are short units of work (``transaction``). Everything that must not race between
workers of one sweep (claiming an attempt against the global caps) runs in ``write_transaction``,
which serializes those writers across threads and processes:

* SQLite: ``BEGIN IMMEDIATE`` takes the database's single write lock before the first read, so
  the count that decides the claim cannot go stale; WAL lets readers (``sweep status``,
  optuna-dashboard) go on meanwhile. pysqlite's own transaction handling is switched off
  (``isolation_level = None``) and SQLAlchemy emits ``BEGIN`` itself, as SQLAlchemy documents.
  ``transaction`` begins IMMEDIATE too (see there why); only ``read_only_session`` and bare
  engine connections begin deferred.
* PostgreSQL: ``SELECT ... FROM sweep_sweeps WHERE id = :id FOR NO KEY UPDATE`` first thing;
  under READ COMMITTED each later statement sees everything committed before the lock was granted.

The schema is never migrated silently: ``ensure_schema`` creates a blank database at head and
refuses an outdated one with a hint to run ``sweep db upgrade``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

import sweeper
from sweeper.errors import SchemaOutdated, StoreError
from sweeper.store.models import Sweep

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

__all__ = [
    "VERSION_TABLE",
    "SchemaState",
    "alembic_config",
    "ensure_schema",
    "include_name",
    "make_engine",
    "make_sessionmaker",
    "migrations_dir",
    "optuna_storage",
    "read_only_session",
    "refuse_writes",
    "schema_state",
    "transaction",
    "upgrade",
    "write_transaction",
]

log = logging.getLogger(__name__)

VERSION_TABLE = "sweep_alembic_version"
TABLE_PREFIX = "sweep_"
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for the lock before failing
PG_CONNECT_TIMEOUT = 10  # seconds

SchemaState = Literal["blank", "current", "behind", "ahead"]

# execution options read by the SQLite "begin" hook
_WRITE_LOCK = "sweeper_write_lock"  # BEGIN IMMEDIATE instead of a deferred BEGIN
_READ_ONLY = "sweeper_read_only"  # PRAGMA query_only for the transaction
_ALWAYS_READ_ONLY = "sweeper_always_read_only"  # set on connections of read-only engines
# pg_advisory_xact_lock key that serializes schema creation/upgrade ("swee" "pdb " in ASCII)
_PG_SCHEMA_LOCK = 0x7377_6565_7064_6220
_PG_OPTUNA_LOCK = _PG_SCHEMA_LOCK + 1  # serializes Optuna's own table creation

_URL_HINT = "expected sqlite:///path/to/sweeps.db or postgresql+psycopg://user@host/dbname"


# -- engines -----------------------------------------------------------------------------------


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for sweeper's storage URL: a SQLite file (WAL, foreign keys) or PostgreSQL.

    ``read_only`` (status, compare, show, report): every connection refuses writes, and the
    SQLite file is left in whatever journal mode it has.
    """
    engine = _create_engine(_checked_url(url), read_only=read_only)
    if read_only:
        refuse_writes(engine)
    return engine


def refuse_writes(engine: Engine) -> None:
    """Make every new connection of ``engine`` read-only (also Optuna's engines)."""

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if engine.dialect.name == "postgresql":
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            else:
                cursor.execute("PRAGMA query_only = ON")
        finally:
            cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()
        connection_record.info[_READ_ONLY] = True
        connection_record.info[_ALWAYS_READ_ONLY] = True


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they outlive their short transaction)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _checked_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"storage is not a database URL ({_URL_HINT})") from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend == "sqlite":
        if driver != "pysqlite":
            raise StoreError(f"unsupported SQLite driver in storage URL {shown} ({_URL_HINT})")
        database = parsed.database or ""
        if (
            database in ("", ":memory:")
            or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory"
        ):
            raise StoreError(
                f"storage {shown} is an in-memory SQLite database; sweeps need a file that "
                f"workers and resumes can share ({_URL_HINT})"
            )
        return parsed
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # bare postgresql:// means psycopg 3 here
            return parsed.set(drivername="postgresql+psycopg")
        if driver != "psycopg":
            raise StoreError(
                f"unsupported PostgreSQL driver {driver!r} in storage URL {shown}; "
                "use postgresql+psycopg://"
            )
        return parsed
    raise StoreError(f"unsupported database {backend!r} in storage URL {shown} ({_URL_HINT})")


def _create_engine(
    url: URL,
    *,
    poolclass: type[NullPool] | None = None,
    foreign_keys: bool = True,
    read_only: bool = False,
) -> Engine:
    kwargs: dict[str, Any] = {}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    try:
        if url.get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **kwargs)
            _install_sqlite_hooks(engine, foreign_keys=foreign_keys, switch_to_wal=not read_only)
            return engine
        connect_args = (
            {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT}
        )
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    except (ImportError, NoSuchModuleError) as exc:
        raise StoreError(
            f"no database driver for {url.render_as_string(hide_password=True)}: {exc}"
        ) from exc


def _install_sqlite_hooks(engine: Engine, *, foreign_keys: bool, switch_to_wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # pysqlite must not emit BEGIN itself: _on_begin decides DEFERRED or IMMEDIATE
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL is a property of the file: readers never block the writer nor the reverse.
            # Switching needs a moment alone with the file, so only switch when needed, and
            # wait out a writer that is creating the same file at this instant.
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0].lower()
            if switch_to_wal and mode != "wal":
                for attempt in range(50):
                    try:
                        cursor.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError:
                        if attempt == 49:
                            raise
                        time.sleep(0.1)
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        read_only = bool(options.get(_READ_ONLY, False))
        info = conn.connection.info
        if info.get(_ALWAYS_READ_ONLY):
            read_only = True  # a read-only engine never lifts the pragma
        if info.get(_READ_ONLY, False) != read_only:  # the pragma outlives the transaction
            conn.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
            info[_READ_ONLY] = read_only
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE_LOCK) else "BEGIN")


def _store_error(exc: SQLAlchemyError) -> StoreError:
    orig = getattr(exc, "orig", None)
    cause = orig if isinstance(orig, BaseException) else exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return StoreError(f"database error ({type(cause).__name__}): {first_line}")


# -- units of work -----------------------------------------------------------------------------


@contextmanager
def transaction(Session: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commits on success, rolls back on any exception.

    ``SQLAlchemyError`` becomes ``StoreError``; other exceptions pass through unchanged.
    On SQLite it also begins IMMEDIATE: a deferred transaction that reads and then writes fails
    at once with "database is locked" if another writer committed in between (a stale WAL
    snapshot cannot take the write lock, and the busy timeout does not apply), whereas IMMEDIATE
    waits its turn. Reads that should not wait for writers belong in ``read_only_session``.
    """
    try:
        with Session.begin() as session:
            session.connection(execution_options={_WRITE_LOCK: True})
            yield session
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


@contextmanager
def write_transaction(Session: sessionmaker[Session], sweep_id: int) -> Iterator[Session]:
    """A unit of work that holds the sweep's claim lock from its first statement to its end.

    Writers of one sweep (in any thread or process) run one at a time, so a count read inside
    is still true when the transaction commits. Raises ``StoreError`` if the sweep does not exist.
    """
    try:
        with Session.begin() as session:
            conn = session.connection(execution_options={_WRITE_LOCK: True})
            lock = select(Sweep.id).where(Sweep.id == sweep_id)
            if conn.dialect.name == "postgresql":
                # FOR NO KEY UPDATE: claimers queue behind each other, but inserts of rows that
                # merely reference the sweep (their FK check takes KEY SHARE) are not blocked
                lock = lock.with_for_update(key_share=True)
            if session.scalar(lock) is None:
                raise StoreError(f"no sweep with id {sweep_id} in the database")
            yield session
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


@contextmanager
def read_only_session(Session: sessionmaker[Session]) -> Iterator[Session]:
    """A session for status/compare: one snapshot, never writes, never takes the write lock.

    On SQLite it runs a deferred transaction with ``PRAGMA query_only``; on PostgreSQL a
    ``READ ONLY`` transaction. It always ends in a rollback; committing it is an error.
    """
    try:
        with Session() as session:
            event.listen(session, "before_commit", _refuse_commit)
            conn = session.connection(execution_options={_READ_ONLY: True})
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                yield session
            finally:
                session.rollback()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


def _refuse_commit(session: Session) -> None:
    raise StoreError("a read-only session cannot commit")


# -- schema ------------------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic environment: inside the installed package, else the checkout's top level."""
    package = Path(sweeper.__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError(f"sweeper's migrations are missing (looked in {package / '_migrations'})")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic filter: only sweeper's ``sweep_*`` tables; Optuna's tables are not ours."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def alembic_config(migrations: Path | None = None, connection: Connection | None = None) -> Config:
    """Alembic's config built in code (no alembic.ini); env.py uses ``connection`` if given."""
    config = Config()
    location = str(migrations or migrations_dir())
    config.set_main_option("script_location", location.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def schema_state(engine: Engine, *, migrations: Path | None = None) -> SchemaState:
    """Where the database's sweeper schema stands relative to this code's migrations."""
    script = ScriptDirectory.from_config(alembic_config(migrations))
    try:
        with engine.connect() as conn:
            return _state_on(conn, script)
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc


def _state_on(conn: Connection, script: ScriptDirectory) -> SchemaState:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = set(context.get_current_heads())
    if not current:
        return "blank"
    if current == set(script.get_heads()):
        return "current"
    for revision in current:
        try:
            if script.get_revision(revision) is None:
                return "ahead"
        except (RevisionError, CommandError):  # a revision this code does not have
            return "ahead"
    return "behind"


def ensure_schema(engine: Engine, *, create: bool = True, migrations: Path | None = None) -> None:
    """Make sure the database holds this sweeper's schema; never migrates an existing one.

    blank -> created at head by running the migrations (if ``create``); current -> nothing;
    behind -> ``SchemaOutdated``; ahead -> ``StoreError``. Concurrent callers are serialized.
    """
    state = schema_state(engine, migrations=migrations)
    if state == "blank" and create:
        _migrate(engine, migrations, blank_only=True)
        return
    check_state(engine, state)


def upgrade(engine_or_url: Engine | str, *, migrations: Path | None = None) -> None:
    """Apply all pending migrations (``sweep db upgrade``); a blank database is created."""
    if isinstance(engine_or_url, Engine):
        _migrate(engine_or_url, migrations, blank_only=False)
        return
    engine = make_engine(engine_or_url)
    try:
        _migrate(engine, migrations, blank_only=False)
    finally:
        engine.dispose()


def check_state(engine: Engine, state: SchemaState) -> None:
    where = engine.url.render_as_string(hide_password=True)
    if state == "current":
        return
    if state == "blank":
        raise SchemaOutdated(
            f"the database {where} has no sweeper tables; run `sweep db upgrade CONFIG` "
            "to create them (`sweep run CONFIG` does so too)"
        )
    if state == "behind":
        raise SchemaOutdated(
            f"the database {where} has an older sweeper schema; run `sweep db upgrade CONFIG`"
        )
    raise StoreError(
        f"the database {where} was written by a newer sweeper (its schema revision is unknown "
        "here); upgrade sweeper"
    )


def _migrate(engine: Engine, migrations: Path | None, *, blank_only: bool) -> None:
    # A separate NullPool engine: migrations hold no pooled connection afterwards, and SQLite's
    # foreign keys are off so batch mode's table rebuilds cannot cascade deletes.
    runner = _create_engine(engine.url, poolclass=NullPool, foreign_keys=False)
    script = ScriptDirectory.from_config(alembic_config(migrations))
    try:
        for attempt in (1, 2):
            try:
                _migrate_locked(runner, script, migrations, blank_only=blank_only)
                return
            except SQLAlchemyError as exc:
                # another process created the tables between our check and our lock
                if attempt == 2 or "already exists" not in str(exc):
                    raise _store_error(exc) from exc
                log.debug("schema created concurrently; checking again", exc_info=True)
    finally:
        runner.dispose()


def _migrate_locked(
    runner: Engine, script: ScriptDirectory, migrations: Path | None, *, blank_only: bool
) -> None:
    with runner.connect() as conn:
        conn = conn.execution_options(**{_WRITE_LOCK: True})
        with conn.begin():  # SQLite: BEGIN IMMEDIATE, the file's write lock until commit
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
            state = _state_on(conn, script)
            if state == "current":
                return
            if state == "ahead" or (blank_only and state == "behind"):
                check_state(runner, state)
            # migrations run inside this transaction: DDL is transactional on both backends
            command.upgrade(alembic_config(migrations, conn), "head")


# -- Optuna ------------------------------------------------------------------------------------


TRIALS_PER_READ = 1000


def _chunked_storage(url: str, engine_kwargs: dict[str, Any]) -> RDBStorage:
    """Optuna's RDBStorage, reading a study's trials TRIALS_PER_READ at a time.

    Optuna materialises every trial of the study (ORM rows, then FrozenTrials) in one query the
    first time a sampler looks at the history; on a 10,000-trial sweep that transient peak was
    ~150 MB of the runner's ~250 MB. Reading in slices keeps only one slice's rows alive, and
    returns the same trials in the same order.
    """
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from sqlalchemy.orm import selectinload

    class ChunkedRDBStorage(RDBStorage):
        def _get_trials(
            self,
            study_id: int,
            states: Any,
            included_trial_ids: set[int],
            trial_id_greater_than: int,
        ) -> list[Any]:
            if not hasattr(self, "_build_frozen_trial_from_trial_model"):  # other Optuna
                return list(
                    super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
                )
            trial = models.TrialModel
            earlier = {i for i in included_trial_ids if i <= trial_id_greater_than}
            session = self.scoped_session()
            try:
                models.StudyModel.find_or_raise_by_id(study_id, session)
                wanted = select(trial.trial_id).where(trial.study_id == study_id)
                if trial_id_greater_than > -1:
                    wanted = wanted.where(trial.trial_id > trial_id_greater_than)
                if states is not None:
                    wanted = wanted.where(trial.state.in_(list(states)))
                ids = sorted(set(session.scalars(wanted)))
                if earlier:
                    again = select(trial.trial_id).where(
                        trial.study_id == study_id, trial.trial_id.in_(sorted(earlier))
                    )
                    if states is not None:
                        again = again.where(trial.state.in_(list(states)))
                    ids = sorted(set(ids) | set(session.scalars(again)))
                out = []
                for start in range(0, len(ids), TRIALS_PER_READ):
                    chunk = ids[start : start + TRIALS_PER_READ]
                    rows = (
                        session.query(trial)
                        .options(
                            selectinload(trial.params),
                            selectinload(trial.values),
                            selectinload(trial.user_attributes),
                            selectinload(trial.system_attributes),
                            selectinload(trial.intermediate_values),
                        )
                        .filter(trial.trial_id.in_(chunk))
                        .order_by(trial.trial_id)
                        .all()
                    )
                    out += [self._build_frozen_trial_from_trial_model(r) for r in rows]
                    session.expunge_all()  # this slice's rows may go now
                session.commit()
                return out
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    return ChunkedRDBStorage(url, engine_kwargs=engine_kwargs)


def optuna_storage(url: str) -> RDBStorage:
    """Optuna's RDBStorage on the same URL, tuned to share it with sweeper's engine.

    SQLite: the file is switched to WAL first (it is persistent) and Optuna's connections wait
    up to ``SQLITE_BUSY_TIMEOUT`` for the write lock instead of failing "database is locked".
    PostgreSQL: ``pool_pre_ping`` so idle pooled connections that the server closed are replaced.
    """
    parsed = _checked_url(url)
    engine_kwargs: dict[str, Any]
    if parsed.get_backend_name() == "sqlite":
        engine = _create_engine(parsed, poolclass=NullPool)
        try:
            with engine.connect():  # the connect hook sets journal_mode=WAL on the file
                pass
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc
        finally:
            engine.dispose()
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    else:
        engine_kwargs = {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT},
        }
    target = parsed.render_as_string(hide_password=False)
    try:
        if parsed.get_backend_name() != "postgresql":
            # two workers starting together on a blank file race in Optuna's CREATE TABLE;
            # the loser finds the tables made and simply tries again
            for attempt in range(40):
                try:
                    return _chunked_storage(target, engine_kwargs)
                except SQLAlchemyError as exc:
                    racing = "already exists" in str(exc) or isinstance(exc, IntegrityError)
                    if not racing or attempt == 39:
                        raise
                    time.sleep(0.05)
            raise AssertionError("unreachable")
        # Optuna creates its tables without a lock; workers starting together on a blank
        # PostgreSQL database would collide on CREATE TABLE, so they take turns.
        locker = _create_engine(parsed, poolclass=NullPool)
        try:
            with locker.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_OPTUNA_LOCK})
                try:
                    return _chunked_storage(target, engine_kwargs)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_OPTUNA_LOCK})
                    conn.commit()
        finally:
            locker.dispose()
    except SQLAlchemyError as exc:
        raise _store_error(exc) from exc
