"""Units of work: error translation, the claim lock across threads and processes, read-only."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, orm, select
from sqlalchemy import text as sa_text

from sweeper.errors import StoreError
from sweeper.store import db
from sweeper.store.models import CLAIMED, Attempt, Sweep

CAP = 5
WORKERS = 4
TRIES = 5  # per worker: 20 attempts at a cap of 5


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def make_sweep(Session: orm.sessionmaker[orm.Session], name: str = "s") -> int:
    with db.transaction(Session) as session:
        sweep = Sweep(
            name=name,
            study_name=name,
            config={},
            fingerprint={},
            created_at=now(),
            updated_at=now(),
        )
        session.add(sweep)
        session.flush()
        return sweep.id


def count_attempts(Session: orm.sessionmaker[orm.Session], sweep_id: int) -> int:
    with db.read_only_session(Session) as session:
        stmt = select(func.count()).select_from(Attempt).where(Attempt.sweep_id == sweep_id)
        return session.scalar(stmt) or 0


def claim_until_cap(url: str, sweep_id: int, tag: str, *, locked: bool = True) -> int:
    """One worker: TRIES times, count the sweep's attempts and insert one if below CAP."""
    engine = db.make_engine(url)
    Session = db.make_sessionmaker(engine)
    won = 0
    try:
        for i in range(TRIES):
            unit = db.write_transaction(Session, sweep_id) if locked else db.transaction(Session)
            with unit as session:
                n = session.scalar(
                    select(func.count()).select_from(Attempt).where(Attempt.sweep_id == sweep_id)
                )
                time.sleep(0.03)  # widen the window between the count and the insert
                if n is not None and n < CAP:
                    ref = f"{tag}-{i}"
                    session.add(
                        Attempt(
                            sweep_id=sweep_id,
                            launch_ref=ref,
                            suffix=ref,
                            state=CLAIMED,
                            created_at=now(),
                        )
                    )
                    won += 1
    finally:
        engine.dispose()
    return won


def in_threads(n: int, work: Callable[[int], object]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def wait_for_go(folder: str, tag: str) -> None:
    """In a worker process: say ready, then wait until the parent says go (a real race)."""
    (Path(folder) / f"ready-{tag}").touch()
    deadline = time.monotonic() + 60
    while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.002)


def in_processes(url: str, sweep_id: int, folder: Path) -> None:
    # each process loads this file by path and runs claim_until_cap: no pickling, no fork
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('claimer', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "mod.wait_for_go(sys.argv[5], sys.argv[4])\n"
        "mod.claim_until_cap(sys.argv[2], int(sys.argv[3]), sys.argv[4])\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, __file__, url, str(sweep_id), f"p{i}", str(folder)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    deadline = time.monotonic() + 60
    while len(list(folder.glob("ready-*"))) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.01)
    (folder / "go").touch()
    failures = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            failures.append(err)
    assert failures == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    value: str = request.getfixturevalue(fixture)
    return value


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def Session(engine: Engine) -> orm.sessionmaker[orm.Session]:
    return db.make_sessionmaker(engine)


def test_write_transaction_holds_the_cap_across_threads(
    url: str, Session: orm.sessionmaker[orm.Session]
) -> None:
    """Threads claiming inside write_transaction never overshoot the cap: exactly CAP rows."""
    sweep_id = make_sweep(Session)
    errors = in_threads(WORKERS, lambda i: claim_until_cap(url, sweep_id, f"t{i}"))
    assert errors == []
    assert count_attempts(Session, sweep_id) == CAP


def test_write_transaction_holds_the_cap_across_processes(
    url: str, Session: orm.sessionmaker[orm.Session], tmp_path: Path
) -> None:
    """Processes claiming inside write_transaction never overshoot the cap: exactly CAP rows."""
    sweep_id = make_sweep(Session)
    in_processes(url, sweep_id, tmp_path)
    assert count_attempts(Session, sweep_id) == CAP


@pytest.mark.postgres
def test_plain_transactions_do_overshoot_the_cap(pg_url: str) -> None:
    """Without the claim lock the same workload overshoots on PostgreSQL (the test has teeth)."""
    engine = db.make_engine(pg_url)
    try:
        db.ensure_schema(engine)
        Session = db.make_sessionmaker(engine)
        sweep_id = make_sweep(Session)
        errors = in_threads(
            WORKERS, lambda i: claim_until_cap(pg_url, sweep_id, f"t{i}", locked=False)
        )
        assert errors == []
        assert count_attempts(Session, sweep_id) > CAP
    finally:
        engine.dispose()


def test_write_transaction_refuses_an_unknown_sweep(Session: orm.sessionmaker[orm.Session]) -> None:
    """write_transaction on a sweep id that does not exist raises StoreError."""
    with (
        pytest.raises(StoreError, match="no sweep with id 999"),
        db.write_transaction(Session, 999),
    ):
        pass


def test_transaction_commits_on_success_and_rolls_back_on_error(
    Session: orm.sessionmaker[orm.Session],
) -> None:
    """transaction() commits its work; an exception inside rolls it back and passes through."""
    make_sweep(Session, "kept")
    with pytest.raises(KeyError), db.transaction(Session) as session:
        session.add(
            Sweep(
                name="lost",
                study_name="lost",
                config={},
                fingerprint={},
                created_at=now(),
                updated_at=now(),
            )
        )
        session.flush()
        raise KeyError("boom")
    with db.read_only_session(Session) as session:
        assert session.scalars(select(Sweep.name)).all() == ["kept"]


def test_transaction_translates_database_errors(Session: orm.sessionmaker[orm.Session]) -> None:
    """An IntegrityError inside transaction() becomes StoreError, with the cause chained."""
    make_sweep(Session, "dup")
    with pytest.raises(StoreError, match="database error") as info:
        make_sweep(Session, "dup")
    assert info.value.__cause__ is not None


def test_sqlite_foreign_keys_are_enforced(sqlite_url: str) -> None:
    """An attempt pointing at a missing sweep is rejected (foreign keys are on)."""
    engine = db.make_engine(sqlite_url)
    try:
        db.ensure_schema(engine)
        Session = db.make_sessionmaker(engine)
        with pytest.raises(StoreError, match="FOREIGN KEY"), db.transaction(Session) as session:
            session.add(
                Attempt(sweep_id=42, launch_ref="x", suffix="x", state=CLAIMED, created_at=now())
            )
    finally:
        engine.dispose()


def test_read_only_session_cannot_write(Session: orm.sessionmaker[orm.Session]) -> None:
    """A write inside read_only_session fails with StoreError and nothing is stored."""
    with pytest.raises(StoreError), db.read_only_session(Session) as session:
        session.add(
            Sweep(
                name="ro",
                study_name="ro",
                config={},
                fingerprint={},
                created_at=now(),
                updated_at=now(),
            )
        )
        session.flush()
    make_sweep(Session, "after")  # the pooled connection is writable again
    with db.read_only_session(Session) as session:
        assert session.scalars(select(Sweep.name)).all() == ["after"]


def test_read_only_session_reads_while_a_writer_holds_the_lock(
    Session: orm.sessionmaker[orm.Session],
) -> None:
    """status-style reads proceed (old snapshot) while another thread holds write_transaction."""
    sweep_id = make_sweep(Session)
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.write_transaction(Session, sweep_id) as session:
            session.add(
                Attempt(
                    sweep_id=sweep_id, launch_ref="w", suffix="w", state=CLAIMED, created_at=now()
                )
            )
            session.flush()
            locked.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(timeout=10)
        seen: list[int] = []
        reader = threading.Thread(target=lambda: seen.append(count_attempts(Session, sweep_id)))
        started = time.monotonic()
        reader.start()
        reader.join(timeout=5)
        assert seen == [0], "the reader blocked behind the writer or saw uncommitted data"
        assert time.monotonic() - started < 5
    finally:
        release.set()
        thread.join(timeout=30)
    assert count_attempts(Session, sweep_id) == 1


@pytest.mark.postgres
def test_postgres_claim_lock_blocks_claimers_but_not_fk_inserts(pg_url: str) -> None:
    """On PG a held claim lock makes a second claimer wait, while a worker row insert goes on."""
    from sweeper.store.models import Worker

    engine = db.make_engine(pg_url)
    try:
        db.ensure_schema(engine)
        Session = db.make_sessionmaker(engine)
        sweep_id = make_sweep(Session)
        locked, release = threading.Event(), threading.Event()
        done: dict[str, float] = {}

        def holder() -> None:
            with db.write_transaction(Session, sweep_id):
                locked.set()
                release.wait(timeout=30)
                done["holder"] = time.monotonic()  # just before the commit releases the lock

        def claimer() -> None:
            with db.write_transaction(Session, sweep_id):
                done["claimer"] = time.monotonic()

        def register_worker() -> None:
            with db.transaction(Session) as session:
                session.add(
                    Worker(
                        id="w1",
                        sweep_id=sweep_id,
                        hostname="h",
                        pid=1,
                        started_at=now(),
                        heartbeat_at=now(),
                    )
                )
            done["worker"] = time.monotonic()

        threads = [threading.Thread(target=holder)]
        threads[0].start()
        assert locked.wait(timeout=10)
        threads += [threading.Thread(target=claimer), threading.Thread(target=register_worker)]
        for t in threads[1:]:
            t.start()
        try:
            threads[2].join(timeout=5)
            assert "worker" in done, "an FK insert waited for the claim lock"
            time.sleep(0.2)
            assert "claimer" not in done, "a second claimer got in while the lock was held"
        finally:
            release.set()
            for t in threads:
                t.join(timeout=30)
        assert done["claimer"] >= done["holder"]
    finally:
        engine.dispose()


def test_read_only_engine_changes_nothing_in_the_file(sqlite_url: str) -> None:
    """make_engine(read_only=True) leaves a file's journal mode alone and refuses writes,
    even in an ordinary transaction."""
    import sqlite3

    writer = db.make_engine(sqlite_url)
    db.ensure_schema(writer)
    writer.dispose()
    path = sqlite_url[len("sqlite:///") :]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    reader = db.make_engine(sqlite_url, read_only=True)
    try:
        with (
            pytest.raises(StoreError, match=r"readonly|read-only|attempt to write"),
            db.transaction(db.make_sessionmaker(reader)) as session,
        ):
            session.execute(
                sa_text(
                    "INSERT INTO sweep_workers (id, sweep_id, hostname, pid, started_at,"
                    " heartbeat_at) VALUES ('w', 1, 'h', 1, '2026-01-01', '2026-01-01')"
                )
            )
    finally:
        reader.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
