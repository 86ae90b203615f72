"""Benchmark the read side on a large sweep: compare, status, report and `sweep --help`.

Builds a synthetic sweep (Optuna study + sweep_* rows, bulk inserted) in a temporary SQLite file,
then times the real CLI in subprocesses, as a user would run it.

    .venv/bin/python bench/bench_compare.py [--trials 10000] [--status-trials 1000]

Goals: compare < 2 s and report < 10 s on 10,000 trials, status < 1 s on 1,000, --help < 0.3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = str(ROOT / ".venv" / "bin" / "sweep")


def _sweepdb():  # type: ignore[no-untyped-def]
    """The builder the tests use (tests/ is not a package, so load it by path)."""
    path = ROOT / "tests" / "test_report_sweepdb.py"
    spec = importlib.util.spec_from_file_location("report_sweepdb", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["report_sweepdb"] = mod
    spec.loader.exec_module(mod)
    return mod


def write_config(folder: Path, name: str, db: Path) -> Path:
    (folder / "train.jsonl").write_text(
        '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n'
    )
    cfg = folder / f"{name}.toml"
    cfg.write_text(
        f'[sweep]\nname = "{name}"\nstorage = "sqlite:///{db}"\nmetric = "valid_loss"\n\n'
        '[job]\nmodel = "meta-llama/Llama-3.1-8B-Instruct"\ntraining_file = "train.jsonl"\n\n'
        '[search.learning_rate]\ntype = "float"\nlow = 1e-5\nhigh = 1e-3\nlog = true\n\n'
        "[budget]\nmax_trained_tokens = 100_000_000\nprice_per_million_tokens = 0.4\n"
    )
    return cfg


def timed(args: list[str], repeat: int = 3) -> float:
    """Median wall time of the command; fails loudly if it fails."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--status-trials", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db_mod = _sweepdb()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        big_db = folder / "big.db"
        db_mod.build_sweep(big_db, db_mod.random_trials(opts.trials), name="big")
        small_db = folder / "small.db"
        db_mod.build_sweep(small_db, db_mod.random_trials(opts.status_trials), name="small")
        build_s = time.perf_counter() - t0
        big = str(write_config(folder, "big", big_db))
        small = str(write_config(folder, "small", small_db))
        out = str(folder / "report.html")
        n, r = opts.trials, opts.repeat
        results = [
            ("build both sweeps (setup)", "", build_s, None),
            ("sweep --help", "", timed([SWEEP, "--help"], r), 0.3),
            (f"compare --format json ({n:,})", "", timed([SWEEP, "compare", big, "--format",
                                                         "json"], r), 2.0),
            (f"compare --format table ({n:,})", "", timed([SWEEP, "compare", big], r), 2.0),
            (f"compare --format csv ({n:,})", "", timed([SWEEP, "compare", big, "--format",
                                                        "csv"], r), 2.0),
            (f"compare --top 10 ({n:,})", "", timed([SWEEP, "compare", big, "--top", "10"], r),
             2.0),
            (f"status ({opts.status_trials:,})", "", timed([SWEEP, "status", small], r), 1.0),
            (f"status ({n:,})", "", timed([SWEEP, "status", big], r), None),
            (f"report ({n:,})", "", timed([SWEEP, "report", big, "--out", out], 1), 10.0),
        ]
        size_mb = Path(out).stat().st_size / 1e6
    print(f"{'command':<36}{'seconds':>10}{'goal':>8}  ok")
    for name, _, secs, goal in results:
        ok = "" if goal is None else ("yes" if secs < goal else "NO")
        print(f"{name:<36}{secs:>10.2f}{'' if goal is None else f'< {goal:g}':>8}  {ok}")
    print(f"report size: {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
