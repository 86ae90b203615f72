"""Benchmark the local fine-tuning service (not a test; prints its numbers).

1. Throughput in the quickstart shape: 6 jobs of 100 chat examples x 2 epochs submitted at once
   to an embedded service (max_running 3), timed from the first upload to the last terminal job.
2. Training only: the same 6 jobs run serially, on 3 threads, and on a 2-process pool, to back
   the choice of worker threads.
3. Memory: a `sweep serve` subprocess trains and stores 50 jobs; its peak RSS (VmHWM), and the
   RSS of a fresh service started on that folder.

    .venv/bin/python bench/bench_local_service.py
"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweeper.local import catalog, trainer
from sweeper.local._blas import single_thread_blas
from sweeper.local.datasets import parse
from sweeper.local.embedded import start_embedded
from sweeper.local.sample_data import write_quickstart
from sweeper.local.testing import create_job, http_client, upload, wait_for

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
HP = {"n_epochs": 2, "learning_rate": 1e-3, "lora": True, "lora_r": 16}


def throughput(folder: Path, n_jobs: int = 6) -> float:
    with start_embedded(folder / "state", max_running=3) as svc:
        with http_client(svc.base_url, svc.api_key) as c:
            start = time.perf_counter()
            train = upload(c, folder / "train.jsonl")
            valid = upload(c, folder / "valid.jsonl")
            ids = [
                create_job(c, train, validation_file=valid, hyperparameters=HP, seed=i)["id"]
                for i in range(n_jobs)
            ]
            jobs = [wait_for(c, i, timeout=120) for i in ids]
            elapsed = time.perf_counter() - start
        assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
        stats = svc.stats()
    print(f"quickstart shape: {n_jobs} jobs (100 ex x 2 epochs) in {elapsed:.2f} s "
          f"= {n_jobs / elapsed:.2f} jobs/s; {sum(stats.values())} requests")  # fmt: skip
    return n_jobs / elapsed


def _train_one(seed: int) -> float:
    single_thread_blas()
    data = parse(Path("configs/data/train.jsonl").read_bytes())[1]
    valid = parse(Path("configs/data/valid.jsonl").read_bytes())[1]
    hp = trainer.HParams(**HP)  # type: ignore[arg-type]
    return trainer.train(catalog.MODELS[MODEL], hp, seed, data, valid, trainer.Hooks()).train_loss


def training_only(n_jobs: int = 6) -> None:
    single_thread_blas()
    start = time.perf_counter()
    for i in range(n_jobs):
        _train_one(i)
    serial = time.perf_counter() - start
    with cf.ThreadPoolExecutor(3) as pool:
        start = time.perf_counter()
        list(pool.map(_train_one, range(n_jobs)))
        threads = time.perf_counter() - start
    with cf.ProcessPoolExecutor(2) as pool:
        start = time.perf_counter()
        list(pool.map(_train_one, range(n_jobs)))
        procs = time.perf_counter() - start
    print(f"training only, {n_jobs} jobs: serial {serial:.2f} s, 3 threads {threads:.2f} s, "
          f"2 processes (incl. start-up) {procs:.2f} s")  # fmt: skip


def _serve(state: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-c", "from sweeper.cli import main; main()", "serve", "--port", "0",
           "--state-dir", str(state), "--api-key", "k", "--max-running", "3"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    return proc, url


def _rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def memory(folder: Path, n_jobs: int = 50) -> None:
    state = folder / "mem-state"
    proc, url = _serve(state)
    try:
        with http_client(url, "k") as c:
            train = upload(c, folder / "train.jsonl")
            valid = upload(c, folder / "valid.jsonl")
            ids = [
                create_job(c, train, validation_file=valid, hyperparameters=HP, seed=i)["id"]
                for i in range(n_jobs)
            ]
            for i in ids:
                wait_for(c, i, timeout=300)
        busy = _rss_kb(proc.pid)
    finally:
        _stop(proc)
    proc, url = _serve(state)
    try:
        with http_client(url, "k") as c:
            listed = c.get("fine_tuning/jobs", params={"limit": 100}).json()["data"]
        fresh = _rss_kb(proc.pid)
    finally:
        _stop(proc)
    size = sum(p.stat().st_size for p in state.iterdir()) / 1e6
    print(f"memory with {len(listed)} jobs stored: peak RSS while training them "
          f"{busy['VmHWM'] / 1024:.0f} MiB; restarted service RSS {fresh['VmRSS'] / 1024:.0f} MiB; "
          f"state folder {size:.1f} MB")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_quickstart(folder)
        throughput(folder)
        training_only()
        memory(folder)


if __name__ == "__main__":
    main()
