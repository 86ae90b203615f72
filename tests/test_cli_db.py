"""`sweep db upgrade` and the outdated-schema refusal, through the real command line."""

from __future__ import annotations

import subprocess

from alembic import command

from sweeper.config import load_config
from sweeper.store import db


def test_outdated_database_is_refused_until_db_upgrade(make_config, sweep_cmd):
    """A database at an older revision: run and status refuse with the `sweep db upgrade`
    hint (exit 1) and write nothing; `sweep db upgrade` brings it to head."""
    path = make_config(None)
    url = load_config(path).storage_url
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(connection=conn), "0001")
        for args in (["run", str(path)], ["status", str(path)]):
            out = subprocess.run([*sweep_cmd, *args], capture_output=True, text=True, timeout=60)
            assert out.returncode == 1, out
            assert "sweep db upgrade" in out.stderr and "Traceback" not in out.stderr
        assert db.schema_state(engine) == "behind"
        up = subprocess.run(
            [*sweep_cmd, "db", "upgrade", str(path)], capture_output=True, text=True, timeout=60
        )
        assert up.returncode == 0, up.stderr
        assert db.schema_state(engine) == "current"
    finally:
        engine.dispose()
