"""`sweep run` killed with SIGKILL at random moments, and the provider killed and restarted:
the same command finishes the sweep with every promise kept (real processes, real HTTP)."""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow

N_TRIALS = 10
KILLS = 12


def test_sigkill_at_random_moments_then_resume(
    tmp_path, service_process, make_config, sweep_cmd, check_invariants
):
    """Twelve SIGKILLs of `sweep run` (and one of the provider), then one clean run: exactly
    n_trials trials, each closed once, one job per attempt, no job left running."""
    svc = service_process("--step-delay", "0.3", "--max-running", "4")
    path = make_config(
        svc,
        sweep={"n_trials": N_TRIALS, "max_concurrent": 3, "sampler": "random"},
        api={"poll_interval": 0.05},
        job__hyperparameters={"n_epochs": 3},
    )
    env = {**os.environ, "SWEEPER_TEST_KEY": svc.api_key}
    rng = random.Random(20261126)
    kills = 0
    for i in range(KILLS):
        proc = subprocess.Popen(
            [*sweep_cmd, "run", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.6, 1.8))
            assert proc.returncode == 0, err
            break  # the sweep ended before this kill: nothing left to interrupt
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            kills += 1
        if i == KILLS // 2:  # the provider dies too, and comes back on the same folder and port
            svc.kill()
            time.sleep(0.2)
            svc.start()
    assert kills >= 10, f"only {kills} kills before the sweep ended"
    done = subprocess.run(
        [*sweep_cmd, "run", str(path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    assert "is complete" in done.stdout
    check_invariants(path, svc.base_url, svc.api_key, N_TRIALS)


def test_sigint_exits_130_and_leaves_the_job_running(
    tmp_path, service_process, make_config, sweep_cmd
):
    """Ctrl-C stops launching, exits 130 and leaves the job running; the next run re-attaches."""
    import signal

    from sweeper.api.client import ApiClient

    svc = service_process("--step-delay", "1.0")
    path = make_config(svc, sweep={"n_trials": 1}, api={"poll_interval": 0.05})
    env = {**os.environ, "SWEEPER_TEST_KEY": svc.api_key}
    proc = subprocess.Popen(
        [*sweep_cmd, "run", str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "launched" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 130
    assert "re-attaches" in rest
    with ApiClient(svc.base_url, svc.api_key) as client:
        jobs = list(client.iter_jobs())
    assert len(jobs) == 1 and not jobs[0].is_terminal
    done = subprocess.run(
        [*sweep_cmd, "run", str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with ApiClient(svc.base_url, svc.api_key) as client:
        jobs = list(client.iter_jobs())
    assert len(jobs) == 1 and jobs[0].is_terminal


def test_sigint_with_cancel_on_exit_cancels_and_closes(
    tmp_path, service_process, make_config, sweep_cmd, rows_of
):
    """With --cancel-on-exit, Ctrl-C cancels the jobs in flight (even one whose POST the
    interrupt cut short) and closes their trials before exiting 130; nothing keeps running."""
    import signal

    from sweeper.api.client import ApiClient

    svc = service_process("--step-delay", "1.0")
    path = make_config(svc, sweep={"n_trials": 2}, api={"poll_interval": 0.05})
    env = {**os.environ, "SWEEPER_TEST_KEY": svc.api_key}
    proc = subprocess.Popen(
        [*sweep_cmd, "run", str(path), "--cancel-on-exit"], env=env, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "launched" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 130
    with ApiClient(svc.base_url, svc.api_key) as client:
        jobs = list(client.iter_jobs())
    assert jobs and all(j.status == "cancelled" for j in jobs)
    rows = rows_of(path)
    assert {a.job_id for a in rows if a.job_id} == {j.id for j in jobs}
    for a in rows:  # a claim the interrupt caught before its POST stays for the next run
        if a.job_id:
            assert a.state == "closed" and a.trial_state == "FAIL"
        else:
            assert a.state in ("claimed", "launching")
