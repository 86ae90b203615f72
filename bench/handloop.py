"""The simplest correct hand-written sweep loop: the baseline for sweeper's overhead.

Optuna ask/tell on its own SQLite storage with the sampler sweeper builds for the same config
(TPE, multivariate, same seed), raw httpx against the fine-tuning API: upload the two files once,
create jobs up to the concurrency cap, one list call per tick to poll (a GET for a job that is not
on the first page), the checkpoints of each finished job for its last ``valid_loss``, tell, and
sleep the poll interval. No crash safety, no resume, no budgets: that is what sweeper adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import optuna

TERMINAL = ("succeeded", "failed", "cancelled")


def hand_sweep(
    *,
    base_url: str,
    api_key: str,
    storage_url: str,
    train: Path,
    valid: Path,
    model: str,
    fixed: dict[str, Any],
    distributions: dict[str, optuna.distributions.BaseDistribution],
    n_trials: int,
    max_concurrent: int,
    poll_interval: float,
    seed: int,
    observer: Callable[..., None] | None = None,
) -> dict[str, int]:
    """Run the sweep; returns the request counts by route."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage_url,
        study_name="hand",
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
        direction="minimize",
    )
    requests: dict[str, int] = {}

    def count(route: str) -> None:
        requests[route] = requests.get(route, 0) + 1

    with httpx.Client(
        base_url=base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30.0,
    ) as http:

        def upload(path: Path) -> str:
            count("POST /files")
            with path.open("rb") as fh:
                files = {"file": (path.name, fh)}
                r = http.post("files", files=files, data={"purpose": "fine-tune"})
            return str(r.raise_for_status().json()["id"])

        train_id, valid_id = upload(train), upload(valid)
        inflight: dict[str, optuna.trial.Trial] = {}
        launched = 0
        while launched < n_trials or inflight:
            if inflight:
                count("GET /fine_tuning/jobs")
                limit = min(100, max(20, 2 * len(inflight)))
                page = http.get("fine_tuning/jobs", params={"limit": limit}).raise_for_status()
                seen = {j["id"]: j for j in page.json()["data"] if j["id"] in inflight}
                for job_id in list(inflight):
                    job = seen.get(job_id)
                    if job is None:
                        count("GET /fine_tuning/jobs/{id}")
                        job = http.get(f"fine_tuning/jobs/{job_id}").raise_for_status().json()
                    if job["status"] not in TERMINAL:
                        continue
                    trial = inflight.pop(job_id)
                    value = None
                    if job["status"] == "succeeded":
                        count("GET /fine_tuning/jobs/{id}/checkpoints")
                        value = _last_valid_loss(http, job_id)
                    if value is None:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    else:
                        study.tell(trial, value)
                    if observer is not None:
                        observer("closed", trial=trial.number, job_id=job_id)
            while launched < n_trials and len(inflight) < max_concurrent:
                trial = study.ask(distributions)
                body = {
                    "model": model,
                    "training_file": train_id,
                    "validation_file": valid_id,
                    "hyperparameters": {**fixed, **trial.params},
                    "seed": 3,
                    "suffix": f"hand-t{trial.number}",
                }
                count("POST /fine_tuning/jobs")
                job = http.post("fine_tuning/jobs", json=body).raise_for_status().json()
                inflight[job["id"]] = trial
                launched += 1
                if observer is not None:
                    observer("launched", trial=trial.number, job_id=job["id"])
            if launched < n_trials or inflight:
                time.sleep(poll_interval)
    return requests


def _last_valid_loss(http: httpx.Client, job_id: str) -> float | None:
    r = http.get(f"fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100})
    data = r.raise_for_status().json()["data"]
    losses = [c["metrics"].get("valid_loss") for c in data]
    losses = [v for v in losses if v is not None]
    return float(losses[-1]) if losses else None
