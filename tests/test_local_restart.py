"""The local service keeps its state across restarts, even a SIGKILL in the middle of training."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sweeper.local.embedded import start_embedded
from sweeper.local.faults import FaultConfig
from sweeper.local.testing import create_job, http_client, upload, wait_for, write_chat

LINE = re.compile(r"sweeper local service listening on (http://127\.0\.0\.1:\d+/v1)\n")


@contextmanager
def serve(state_dir: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`sweep serve --port 0` as a subprocess; yields it and the URL from its stdout line.

    The accepted key "k" comes from SWEEPER_LOCAL_API_KEY, so every test here also checks it.
    """
    cmd = [sys.executable, "-c", "from sweeper.cli import main; main()", "serve", "--port", "0",
           "--state-dir", str(state_dir), *flags]  # fmt: skip
    env = {**os.environ, "SWEEPER_LOCAL_API_KEY": "k"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LINE.fullmatch(line)
        assert match, f"unexpected first line {line!r}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigkill_mid_job_then_restart_finishes_every_job(tmp_path: Path) -> None:
    """After SIGKILL mid-training, a restart on the same folder serves and finishes every job."""
    state = tmp_path / "state"
    data = write_chat(tmp_path / "t.jsonl", 24)
    with serve(state, "--step-delay", "0.05", "--max-running", "1") as (proc, url):
        with http_client(url, "k") as c:
            file_id = upload(c, data)
            ids = [create_job(c, file_id, hyperparameters={"n_epochs": 2}, seed=1)["id"]
                   for _ in range(2)]  # fmt: skip
            running = wait_for(c, ids[0], ("running",))
            while c.get(f"fine_tuning/jobs/{ids[0]}/checkpoints").json()["data"] == []:
                time.sleep(0.02)  # let the first epoch's checkpoint land
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with serve(state) as (_, url), http_client(url, "k") as c:
        jobs = [wait_for(c, job_id) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
        listed = {j["id"] for j in c.get("fine_tuning/jobs").json()["data"]}
        assert set(ids) <= listed and c.get(f"files/{file_id}").status_code == 200
        steps = [ck["step_number"] for ck in
                 c.get(f"fine_tuning/jobs/{ids[0]}/checkpoints").json()["data"]]  # fmt: skip
        assert steps == [running["total_steps"] // 2, running["total_steps"]]  # none twice
        # deterministic training: the restarted job's metrics equal the uninterrupted one's
        m0 = c.get(f"fine_tuning/jobs/{ids[0]}/checkpoints").json()["data"][-1]["metrics"]
        m1 = c.get(f"fine_tuning/jobs/{ids[1]}/checkpoints").json()["data"][-1]["metrics"]
        assert m0 == m1
        events = [e["message"] for e in c.get(f"fine_tuning/jobs/{ids[0]}/events",
                                                params={"limit": 100}).json()["data"]]  # fmt: skip
        assert any("restarted" in m for m in events)
        assert events[-1] == "Training completed successfully"


def test_port_file_receives_the_base_url(tmp_path: Path) -> None:
    """--port-file gets the same base URL the stdout line announces."""
    port_file = tmp_path / "url.txt"
    with serve(tmp_path / "s", "--port-file", str(port_file)) as (_, url):
        assert port_file.read_text().strip() == url


def test_sigterm_stops_serve_cleanly(tmp_path: Path) -> None:
    """SIGTERM makes `sweep serve` exit with status 0 within a few seconds."""
    with serve(tmp_path / "s") as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def test_embedded_stop_is_prompt_and_restart_resumes(tmp_path: Path) -> None:
    """stop() returns in under a second mid-job, and a new service on the folder finishes it."""
    data = write_chat(tmp_path / "t.jsonl", 24)
    svc = start_embedded(tmp_path / "s", faults=FaultConfig(step_delay=0.2))
    with http_client(svc.base_url, svc.api_key) as c:
        job = create_job(c, upload(c, data), hyperparameters={"n_epochs": 2})
        wait_for(c, job["id"], ("running",))
    start = time.monotonic()
    svc.stop()
    assert time.monotonic() - start < 1.0
    with start_embedded(tmp_path / "s") as again, http_client(again.base_url, again.api_key) as c:
        assert wait_for(c, job["id"])["status"] == "succeeded"


def test_list_models_flag_prints_the_catalog() -> None:
    """`sweep serve --list-models` prints each accepted model name and exits 0."""
    from click.testing import CliRunner

    from sweeper.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--list-models"])
    assert result.exit_code == 0
    assert "meta-llama/Llama-3.1-8B-Instruct\t" in result.output
    assert "Qwen/Qwen3-30B-A3B-Instruct-2507" in result.output
