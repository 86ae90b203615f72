"""Optuna's RDBStorage and sweeper's tables share one database without colliding."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import optuna
import pytest
from alembic import command
from optuna.storages import RDBStorage
from sqlalchemy import Engine, func, inspect, select

from sweeper.store import db
from sweeper.store.models import CLAIMED, Attempt, Base, Sweep

SWEEP_TABLES = {t.name for t in Base.metadata.sorted_tables}
THREADS = 3
ROUNDS = 5


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return value


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def storage(url: str) -> Iterator[RDBStorage]:
    storage = db.optuna_storage(url)
    yield storage
    storage.remove_session()
    storage.engine.dispose()


def optuna_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


@pytest.mark.parametrize("optuna_first", [True, False], ids=["optuna-first", "sweeper-first"])
def test_optuna_and_sweeper_share_one_database(
    url: str, engine: Engine, optuna_first: bool
) -> None:
    """Either may create the DB first; a study runs, both schemas stay intact and undrifted."""
    if not optuna_first:
        db.ensure_schema(engine)
    storage = db.optuna_storage(url)
    try:
        revision_before = optuna_revision(engine)
        db.ensure_schema(engine)
        study = optuna.create_study(storage=storage, study_name="s", direction="minimize")
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
        study.tell(trial, 0.5)
        assert [t.value for t in study.trials] == [0.5]
    finally:
        storage.remove_session()
        storage.engine.dispose()

    tables = set(inspect(engine).get_table_names())
    assert SWEEP_TABLES | {db.VERSION_TABLE} <= tables
    assert {"studies", "trials", "version_info", "alembic_version"} <= tables
    assert optuna_revision(engine) == revision_before is not None
    assert db.schema_state(engine) == "current"
    with engine.connect() as conn:
        command.check(db.alembic_config(connection=conn))  # Optuna's tables are not drift
    # Optuna still accepts its schema after ours was created beside it
    reopened = db.optuna_storage(url)
    try:
        assert optuna.load_study(study_name="s", storage=reopened).best_value == 0.5
    finally:
        reopened.remove_session()
        reopened.engine.dispose()


def test_optuna_and_sweeper_write_concurrently(
    url: str, engine: Engine, storage: RDBStorage
) -> None:
    """3 threads each ask/tell Optuna trials and claim rows: no 'database is locked', no loss."""
    db.ensure_schema(engine)
    Session = db.make_sessionmaker(engine)
    optuna.create_study(storage=storage, study_name="s")
    with db.transaction(Session) as session:
        sweep = Sweep(
            name="s", study_name="s", config={}, fingerprint={}, created_at=now(), updated_at=now()
        )
        session.add(sweep)
        session.flush()
        sweep_id = sweep.id

    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        try:
            study = optuna.load_study(study_name="s", storage=storage)
            start.wait()
            for r in range(ROUNDS):
                with db.write_transaction(Session, sweep_id) as session:
                    ref = f"w{i}-{r}"
                    session.add(
                        Attempt(
                            sweep_id=sweep_id,
                            launch_ref=ref,
                            suffix=ref,
                            state=CLAIMED,
                            created_at=now(),
                        )
                    )
                trial = study.ask()
                trial.set_user_attr("launch_ref", f"w{i}-{r}")
                x = trial.suggest_float("x", 0, 1)
                study.tell(trial, x)
                with db.transaction(Session) as session:
                    row = session.scalars(select(Attempt).where(Attempt.launch_ref == ref)).one()
                    row.trial_number = trial.number
        except BaseException as exc:
            errors.append(exc)
        finally:
            storage.remove_session()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == THREADS * ROUNDS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    with db.read_only_session(Session) as session:
        numbers = session.scalars(select(Attempt.trial_number)).all()
        assert sorted(n for n in numbers if n is not None) == list(range(THREADS * ROUNDS))
        assert session.scalar(select(func.count()).select_from(Attempt)) == THREADS * ROUNDS


def test_chunked_trial_reads_equal_optunas_own(sqlite_url: str) -> None:
    """optuna_storage() reads a study's trials in slices, with exactly the trials Optuna's own
    RDBStorage returns: every filter (states, ids above a mark, earlier ids), same order."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState, create_trial

    ours = db.optuna_storage(sqlite_url)
    plain = RDBStorage(sqlite_url)
    try:
        study = optuna.create_study(storage=ours, study_name="s")
        states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
        study.add_trials(
            create_trial(
                state=states[i % 3],
                value=float(i) if i % 3 == 0 else None,
                params={"lr": i / 3000, "r": [8, 16][i % 2]},
                distributions={
                    "lr": FloatDistribution(0, 1),
                    "r": CategoricalDistribution([8, 16]),
                },
                user_attrs={"job_id": f"ftjob-{i}"},
                intermediate_values={1: i * 0.5} if i % 3 == 1 else {},
            )
            for i in range(1300)
        )
        sid = study._study_id
        for args in [
            (None, set(), -1),
            ((TrialState.COMPLETE,), set(), -1),
            (None, set(), 1100),
            (None, {5, 17, 1250}, 1000),
            ((TrialState.PRUNED, TrialState.FAIL), {3, 4, 9}, 1200),
        ]:
            got = ours._get_trials(sid, *args)  # type: ignore[attr-defined]
            want = plain._get_trials(sid, *args)
            assert got == want and len(got) > 0
        assert len(ours._get_trials(sid, None, set(), -1)) == 1300  # type: ignore[attr-defined]
        assert db.TRIALS_PER_READ < 1300  # the reads really were sliced
    finally:
        ours.engine.dispose()
        plain.engine.dispose()
