"""Goals 4 and 5, scale and start-up: large sweeps on the read side, the runner and the sampler.

A history of N finished trials is written the way the engine leaves it, quickly: the schema by
the engine's own ``ensure_schema``, the sweep row by ``open_sweep_row`` (so ``sweep run`` resumes
it without a config diff), the Optuna study by ``create_study`` and its trials, attempts,
checkpoints and events by the bulk builders bench/bench_compare.py uses (tests/
test_report_sweepdb.py). Then:

- ``sweep compare`` (table and json) and ``sweep report`` on 10,000 trials (subprocesses);
- the runner's peak RSS: a real ``run_sweep`` of 50 more trials on the 10,000-trial history
  (``--more 200`` for the 200 of the issue: ~0.5 s per trial at that size, see README),
  in a subprocess that prints ``ru_maxrss`` (the local service runs in this process, so its
  memory is not counted);
- TPE's time per trial (ask + tell, on the sweep's RDB storage, as the runner calls it) with
  1,000 and 5,000 trials of history, and the mitigations sweeper's config already allows;
- ``sweep --help`` and ``sweep status`` on 1,000 trials (best of 5).

    .venv/bin/python bench/bench_scale.py [--trials 10000] [--more 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import KEY_ENV, SWEEP, Row, print_table, timed_cli, write_sweep_config
from bench_compare import _sweepdb

SCALE_SEARCH: dict[str, dict[str, object]] = {  # = the builder's DISTRIBUTIONS
    "search.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "search.lora_r": {"type": "categorical", "choices": [8, 16, 32, 64]},
    "search.n_epochs": {"type": "int", "low": 1, "high": 5},
}
FIXED = {"lora": True, "batch_size": 8}


def history_config(
    folder: Path, base_url: str, n_trials: int, sampler: str = "tpe", **options: object
) -> Path:
    return write_sweep_config(
        folder, base_url=base_url, n_trials=n_trials, max_concurrent=8, poll_interval=0.05,
        sampler=sampler, search=SCALE_SEARCH, fixed=FIXED, sampler_options=options or None,
    )  # fmt: skip


def build_history(cfg_path: Path, n: int) -> None:
    """N finished trials (no job in flight) in the sweep's storage, as the engine leaves them."""
    import optuna
    from sqlalchemy.orm import Session

    from sweeper.config import load_config
    from sweeper.engine.prepare import open_sweep_row
    from sweeper.engine.study import directions
    from sweeper.store.db import ensure_schema, make_engine, make_sessionmaker, optuna_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = _sweepdb()
    cfg = load_config(cfg_path)
    url = cfg.storage_url
    trials = db.random_trials(n)
    for t in trials:  # the builder leaves the last 4 running; a finished history here
        if t.state == "RUNNING":
            t.state, t.values = "COMPLETE", [0.4 + 0.01 * len(t.params)]
    engine = make_engine(url)
    try:
        ensure_schema(engine)
        sweep = open_sweep_row(make_sessionmaker(engine), cfg, allow_change=False)
        storage = optuna_storage(url)
        try:
            optuna.create_study(
                storage=storage, study_name=cfg.sweep.name, directions=directions(cfg)
            )
        finally:
            storage.engine.dispose()
        db._bulk_optuna_trials(engine, cfg.sweep.name, trials)
        with Session(engine) as session, session.begin():
            db._insert_attempts(session, sweep.id, cfg.sweep.name, trials)
    finally:
        engine.dispose()


# --- the runner's memory ----------------------------------------------------------------------

_CHILD = """
import json, resource, sys, time
from sweeper.config import load_config
from sweeper.engine.service import run_sweep
cfg = load_config(sys.argv[1])
t0 = time.perf_counter()
result = run_sweep(cfg, env={"KEY_ENV": sys.argv[2]}, n_trials=int(sys.argv[3]))
wall = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child forked from this
# large bench process would report the parent's peak instead of its own
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss_kb": peak_kb,
                  "wall": wall, "counts": result.counts}))
""".replace("KEY_ENV", KEY_ENV)


def runner_memory(folder: Path, n_history: int, more: int) -> tuple[dict[str, Any], float]:
    """Peak RSS of ``run_sweep`` adding ``more`` trials to an ``n_history`` history; build s."""
    from sweeper.local.embedded import start_embedded

    with start_embedded(folder / "service", max_running=8) as svc:
        cfg = history_config(folder / "sweep", svc.base_url, n_history + more)
        t0 = time.perf_counter()
        build_history(cfg, n_history)
        build = time.perf_counter() - t0
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(cfg), svc.api_key, str(n_history + more)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"run_sweep on the large history failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), build


# --- the sampler ------------------------------------------------------------------------------


def sampler_seconds(folder: Path, n_history: int, repeat: int = 3, **options: object) -> float:
    """Median seconds of one ask + tell on an ``n_history``-trial study (sweeper's sampler)."""
    import statistics
    import warnings

    from sweeper.config import load_config
    from sweeper.engine.study import distributions, open_study, quiet_optuna
    from sweeper.store.db import optuna_storage

    quiet_optuna()
    cfg_path = history_config(folder, "local", n_history + repeat, **options)
    build_history(cfg_path, n_history)
    cfg = load_config(cfg_path)
    storage = optuna_storage(cfg.storage_url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # QMCSampler is "experimental"
            study = open_study(cfg, storage, cfg.sweep.seed)
        dists = distributions(cfg)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            trial = study.ask(dists)
            study.tell(trial, 0.5)
            times.append(time.perf_counter() - t0)
    finally:
        storage.engine.dispose()
    return statistics.median(times)


# --- the whole section ------------------------------------------------------------------------


def run(n_big: int = 10_000, more: int = 50, n_status: int = 1_000) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # the big sweep: its run first (memory), then the read side on the same database
        info, build = runner_memory(folder / "big", n_big, more)
        print(f"  built a {n_big:,}-trial history in {build:.1f} s; run_sweep of {more} more "
              f"trials: {info['wall']:.1f} s, {info['counts']}")  # fmt: skip
        big = str(folder / "big" / "sweep" / "sweep.toml")
        t_json = timed_cli([SWEEP, "compare", big, "--format", "json"], 3)
        t_table = timed_cli([SWEEP, "compare", big], 3)
        t_report = timed_cli([SWEEP, "report", big, "--out", str(folder / "r.html")], 1)
        rss_mb = info["maxrss_kb"] / 1024
        n_all = n_big + more
        rows += [
            Row("4", f"sweep compare --format json ({n_all:,} trials)", t_json, "s", "< 2",
                t_json < 2, "best of 3"),
            Row("4", f"sweep compare, table ({n_all:,} trials)", t_table, "s", "< 2",
                t_table < 2, "best of 3"),
            Row("4", f"sweep report ({n_all:,} trials)", t_report, "s", "< 10", t_report < 10),
            Row("4", f"runner peak RSS, {more} trials on {n_big:,}", rss_mb, "MB", "< 200",
                rss_mb < 200, f"TPE; run took {info['wall']:.1f} s"),
        ]  # fmt: skip
        # the sampler's time per trial against its history
        for n in (1_000, 5_000):
            secs = sampler_seconds(folder / f"tpe{n}", n)
            rows.append(Row("4", f"TPE ask+tell, {n:,} trials of history", secs * 1000, "ms",
                            "report", None, "sweeper default (multivariate)"))  # fmt: skip
        for label, sampler, options in (
            ("TPE n_ei_candidates=8", "tpe", {"n_ei_candidates": 8}),
            ("random", "random", {}),
            ("qmc", "qmc", {}),
        ):
            secs = sampler_seconds(folder / f"{sampler}{len(options)}", 5_000, sampler=sampler,
                                   **options)  # fmt: skip
            rows.append(Row("4", f"{label} ask+tell, 5,000 trials", secs * 1000, "ms",
                            note="sampler_options knob"))  # fmt: skip
        # start-up
        small_cfg = history_config(folder / "small", "local", n_status)
        build_history(small_cfg, n_status)
        t_help = timed_cli([SWEEP, "--help"], 5)
        t_status = timed_cli([SWEEP, "status", str(small_cfg)], 5)
        rows += [
            Row("5", "sweep --help", t_help, "s", "< 0.3", t_help < 0.3, "best of 5"),
            Row("5", f"sweep status ({n_status:,} trials)", t_status, "s", "< 1", t_status < 1,
                "best of 5"),
        ]  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--more", type=int, default=50)
    opts = ap.parse_args()
    print_table(run(opts.trials, opts.more))


if __name__ == "__main__":
    main()
