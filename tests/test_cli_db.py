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


def test_unreachable_provider_warns_on_each_retry_then_exits_1(make_config, sweep_cmd):
    """With the provider down, each retry is one WARNING line naming the request and the
    reason, and the run ends with one error line and exit code 1 after max_retry_time."""
    path = make_config(None, api={"base_url": "http://127.0.0.1:9/v1", "max_retry_time": 2.0})
    out = subprocess.run(
        [*sweep_cmd, "run", str(path)],
        capture_output=True, text=True, timeout=60, env={"SWEEPER_TEST_KEY": "k", "PATH": ""},
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: POST /files: cannot connect")
    assert any(line.startswith("WARNING: POST /files: cannot connect") for line in lines[:-1])
    assert "Traceback" not in out.stderr and "stamina" not in out.stderr
