"""Goal 1, overhead: the same sweep run by sweeper's ``run_sweep`` and by the hand-written loop.

64 trials, 8 concurrent, one-epoch jobs on the 24-example tiny dataset, TPE with a seed, poll
interval 0.2 s, each run against a fresh embedded local service (max_running 8) in this process,
each run in a fresh folder. Runs alternate (sweeper, hand, sweeper, hand, ...) so that load from
others on the machine hits both alike; the best of ``--repeat`` runs of each is compared.

    .venv/bin/python bench/bench_overhead.py [--trials 64] [--repeat 2]

Goal: sweeper's wall time <= 1.1 x the hand-written loop's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import FIXED_HPS, MODEL, Row, print_table, run_local_sweep, write_sweep_config
from handloop import hand_sweep

N_TRIALS = 64
CONCURRENT = 8
POLL = 0.2
SEED = 7


def _service(folder: Path):  # type: ignore[no-untyped-def]
    from sweeper.local.embedded import start_embedded

    return start_embedded(folder / "service", max_running=CONCURRENT)


def time_sweeper(folder: Path, n_trials: int = N_TRIALS) -> tuple[float, dict[str, int]]:
    """Wall time of one ``run_sweep`` call (schema, study, uploads, all trials) and its requests."""
    with _service(folder) as svc:
        cfg = write_sweep_config(
            folder / "sweeper", base_url=svc.base_url, n_trials=n_trials,
            max_concurrent=CONCURRENT, poll_interval=POLL, seed=SEED,
        )  # fmt: skip
        t0 = time.perf_counter()
        result = run_local_sweep(cfg, svc.api_key)
        wall = time.perf_counter() - t0
    assert result.counts.get("COMPLETE", 0) + result.counts.get("FAIL", 0) == n_trials, result
    return wall, dict(result.requests)


def time_hand(folder: Path, n_trials: int = N_TRIALS) -> tuple[float, dict[str, int]]:
    """Wall time of the hand-written loop on the same sweep (storage created inside the call)."""
    from sweeper.config import load_config
    from sweeper.engine.study import distributions

    with _service(folder) as svc:
        cfg_path = write_sweep_config(
            folder / "hand", base_url=svc.base_url, n_trials=n_trials,
            max_concurrent=CONCURRENT, poll_interval=POLL, seed=SEED,
        )  # fmt: skip
        dists = distributions(load_config(cfg_path))  # the same search space, built once
        t0 = time.perf_counter()
        requests = hand_sweep(
            base_url=svc.base_url, api_key=svc.api_key,
            storage_url=f"sqlite:///{cfg_path.parent / 'hand.db'}",
            train=cfg_path.parent / "train.jsonl", valid=cfg_path.parent / "valid.jsonl",
            model=MODEL, fixed=dict(FIXED_HPS), distributions=dists, n_trials=n_trials,
            max_concurrent=CONCURRENT, poll_interval=POLL, seed=SEED,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    return wall, requests


def run(repeat: int = 2, n_trials: int = N_TRIALS) -> list[Row]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweeper_times: list[float] = []
    hand_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            s, s_req = time_sweeper(Path(tmp) / f"s{i}", n_trials)
            h, h_req = time_hand(Path(tmp) / f"h{i}", n_trials)
            sweeper_times.append(s)
            hand_times.append(h)
            print(f"  overhead run {i + 1}: sweeper {s:.2f} s ({sum(s_req.values())} requests), "
                  f"hand loop {h:.2f} s ({sum(h_req.values())} requests)")  # fmt: skip
    s, h = min(sweeper_times), min(hand_times)
    shape = f"{n_trials} trials, {CONCURRENT} concurrent, poll {POLL} s, best of {repeat}"
    return [
        Row("1", "sweeper run_sweep wall time", s, "s", note=shape),
        Row("1", "hand-written loop wall time", h, "s", note=shape),
        Row("1", "ratio sweeper / hand loop", s / h, "x", "<= 1.1", s / h <= 1.1),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=N_TRIALS)
    ap.add_argument("--repeat", type=int, default=2)
    opts = ap.parse_args()
    print_table(run(opts.repeat, opts.trials))


if __name__ == "__main__":
    main()
