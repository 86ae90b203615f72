"""Helpers for tests and benchmarks that drive the local service over real HTTP.

They live in the package (like ``httpx.MockTransport``) so every layer's tests can use them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from sweeper.local.sample_data import examples, write_jsonl

TERMINAL = ("succeeded", "failed", "cancelled")


def write_chat(path: Path, n: int, seed: int = 1) -> Path:
    """A small learnable chat dataset of ``n`` examples."""
    write_jsonl(path, examples(n, seed))
    return path


def http_client(base_url: str, api_key: str) -> httpx.Client:
    """An httpx client aimed at the service (close it, or use it as a context manager)."""
    return httpx.Client(
        base_url=base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(10.0),
    )


def upload(client: httpx.Client, path: Path, purpose: str = "fine-tune") -> str:
    """Upload ``path``; the file id."""
    with path.open("rb") as fh:
        r = client.post("files", files={"file": (path.name, fh)}, data={"purpose": purpose})
    r.raise_for_status()
    return str(r.json()["id"])


def create_job(client: httpx.Client, training_file: str, **fields: Any) -> dict[str, Any]:
    body = {"model": "meta-llama/Llama-3.1-8B-Instruct", "training_file": training_file, **fields}
    r = client.post("fine_tuning/jobs", json=body)
    r.raise_for_status()
    return dict(r.json())


def wait_for(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the job until its status is one of ``statuses``; the job object."""
    deadline = time.monotonic() + timeout
    while True:
        job = dict(client.get(f"fine_tuning/jobs/{job_id}").raise_for_status().json())
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job['status']} after {timeout} s")
        time.sleep(0.02)
