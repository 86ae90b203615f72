"""Shared pieces of the benchmarks in bench/ (not a test module; imported by the bench_* scripts).

A sweep config is written the way tests/conftest.py's ``make_config`` writes one (the same
``render_toml``), pointed at a local service on 127.0.0.1 and the tiny datasets in tests/data.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SWEEP = str(ROOT / ".venv" / "bin" / "sweep")
KEY_ENV = "SWEEPER_BENCH_KEY"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FIXED_HPS: dict[str, object] = {"lora": True, "batch_size": 8, "n_epochs": 1}
SEARCH: dict[str, dict[str, object]] = {
    "search.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "search.lora_r": {"type": "categorical", "choices": [8, 16]},
}


@dataclass
class Row:
    """One line of the final table."""

    section: str
    name: str
    value: float | None
    unit: str = ""
    goal: str = ""  # e.g. "<= 1.1"
    ok: bool | None = None  # None: reported, no goal
    note: str = ""

    def cells(self) -> list[str]:
        if self.value is None:
            shown = "-"
        elif self.unit == "x" or abs(self.value) < 10:
            shown = f"{self.value:.3g}" if abs(self.value) < 1 else f"{self.value:.2f}"
        else:
            shown = f"{self.value:,.0f}"
        ok = "" if self.ok is None else ("yes" if self.ok else "NO")
        return [self.section, self.name, f"{shown} {self.unit}".strip(), self.goal, ok, self.note]


def print_table(rows: Sequence[Row]) -> None:
    head = ["#", "measure", "value", "goal", "met", "note"]
    table = [head, *[r.cells() for r in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_toml(sections: dict[str, dict[str, object]]) -> str:
    """As tests/conftest.py renders a config."""
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def write_sweep_config(
    folder: Path,
    *,
    base_url: str,
    n_trials: int,
    max_concurrent: int,
    poll_interval: float,
    sampler: str = "tpe",
    seed: int = 7,
    name: str = "bench",
    search: dict[str, dict[str, object]] | None = None,
    sampler_options: dict[str, object] | None = None,
    fixed: dict[str, object] | None = None,
) -> Path:
    """A sweep TOML in ``folder`` (with the tiny datasets copied beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "tiny_train.jsonl", folder / "train.jsonl")
    shutil.copy(DATA / "tiny_valid.jsonl", folder / "valid.jsonl")
    sweep: dict[str, object] = {
        "name": name,
        "storage": "sqlite:///sweeps.db",
        "n_trials": n_trials,
        "max_concurrent": max_concurrent,
        "sampler": sampler,
        "seed": seed,
    }
    sections: dict[str, dict[str, object]] = {
        "sweep": sweep,
        "api": {"base_url": base_url, "poll_interval": poll_interval, "api_key_env": KEY_ENV},
        "job": {
            "model": MODEL,
            "training_file": "train.jsonl",
            "validation_file": "valid.jsonl",
            "seed": 3,
        },
        "job.hyperparameters": dict(FIXED_HPS if fixed is None else fixed),
        **(search if search is not None else SEARCH),
    }
    if sampler_options:
        sections["sweep.sampler_options"] = dict(sampler_options)
    path = folder / "sweep.toml"
    path.write_text(render_toml(sections))
    return path


def run_local_sweep(path: Path, api_key: str, **kwargs: Any) -> Any:
    """``run_sweep`` on a config file, in this process; the RunResult."""
    from sweeper.config import load_config
    from sweeper.engine.service import run_sweep

    return run_sweep(load_config(path), env={KEY_ENV: api_key}, **kwargs)


def timed_cli(args: list[str], repeat: int = 5) -> float:
    """Best wall time of a subprocess over ``repeat`` runs; fails loudly if it fails."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return best


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (0 < q <= 1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[k]


TERMINAL = ("succeeded", "failed", "cancelled")


class Timeline:
    """Exact moments, at the service, at which jobs are created and turn terminal.

    The service stores ``finished_at`` in whole seconds, too coarse here, so this wraps the
    service's own ``State.add_job`` and ``State.update_job`` (the single places a job is created
    or changes status) and stamps ``time.monotonic()`` when the transaction has committed. Bench
    instrumentation only: the service's behaviour is unchanged.
    """

    def __init__(self, state: Any) -> None:
        import threading

        self._lock = threading.Lock()
        self.created: list[tuple[float, str]] = []
        self.terminal: list[tuple[float, str, str]] = []  # (t, job id, status)
        add_job, update_job = state.add_job, state.update_job

        def stamped_add_job(obj: dict[str, Any], event: dict[str, Any]) -> None:
            add_job(obj, event)
            with self._lock:
                self.created.append((time.monotonic(), obj["id"]))

        def stamped_update_job(job_id: str, change: Any, *args: Any, **kwargs: Any) -> Any:
            new = update_job(job_id, change, *args, **kwargs)
            if new is not None and new.get("status") in TERMINAL:
                with self._lock:
                    self.terminal.append((time.monotonic(), job_id, new["status"]))
            return new

        state.add_job = stamped_add_job
        state.update_job = stamped_update_job


class Events:
    """An observer for ``run_sweep`` that keeps (monotonic time, kind, info) of every event."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, kind: str, **info: Any) -> None:
        self.items.append((time.monotonic(), kind, info))

    def times(self, kind: str) -> list[float]:
        return [t for t, k, _ in self.items if k == kind]

    def by_job(self, kind: str) -> dict[str, float]:
        return {i["job_id"]: t for t, k, i in self.items if k == kind and i.get("job_id")}
