"""The README's main command: the quickstart sweep on the embedded local service."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).parent.parent / "configs"


def test_quickstart_runs_then_says_complete(tmp_path, sweep_cmd):
    """`sweep run configs/quickstart.toml` finishes its 12 trials with no account and no key,
    keeps the database and the local service's state beside the config, and a second run
    launches nothing and says the sweep is complete."""
    folder = tmp_path / "configs"
    shutil.copytree(CONFIGS, folder)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no provider key anywhere
    cfg = str(folder / "quickstart.toml")
    first = subprocess.run(
        [*sweep_cmd, "run", cfg], env=env, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert "sweep quickstart is complete" in first.stdout
    assert (folder / "quickstart.db").exists()
    assert (folder / "quickstart.local-service").is_dir()
    rows = json.loads(
        subprocess.run(
            [*sweep_cmd, "compare", cfg, "--format", "json"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert len(rows) == 12
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED", "FAIL"}
    assert any(r["state"] == "COMPLETE" for r in rows)
    jobs = {r["job_id"] for r in rows}
    second = subprocess.run(
        [*sweep_cmd, "run", cfg], env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert "is complete" in second.stdout and "launched" not in second.stdout
    again = json.loads(
        subprocess.run(
            [*sweep_cmd, "compare", cfg, "--format", "json"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert {r["job_id"] for r in again} == jobs
