"""Goal 3, reaction time: from a job turning terminal at the service to its trial closed and the
next job created, at poll intervals 0.5 s and 0.2 s.

24 trials, 8 concurrent, ``batch_size`` searched in 1..8 (3 to 24 steps of the 24-example
dataset) and a 0.06 s ``step_delay``, so jobs last about 0.2 to 1.5 s and turn terminal at
scattered moments of the poll cycle (equal job lengths would alias with the tick period).
The terminal moment and each creation are stamped inside the service (``_common.Timeline``;
the stored ``finished_at`` has whole seconds only); the trial's close comes from
``run_sweep``'s observer ("closed"). With the slots refilled in order, the i-th job to finish
frees the slot of the (i + 8)-th job created.

    .venv/bin/python bench/bench_reaction.py

Goal: median <= poll interval + 50 ms.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import (
    SEARCH,
    Events,
    Row,
    Timeline,
    median,
    print_table,
    quantile,
    run_local_sweep,
    write_sweep_config,
)

N_TRIALS = 24
CONCURRENT = 8
STEP_DELAY = 0.06
SEARCH_BATCH = {**SEARCH, "search.batch_size": {"type": "int", "low": 1, "high": 8}}


def measure(folder: Path, poll: float) -> tuple[list[float], list[float]]:
    """(terminal -> trial closed, terminal -> next job created) in seconds, one per job."""
    import optuna

    from sweeper.local.embedded import start_embedded
    from sweeper.local.faults import FaultConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with start_embedded(
        folder / "service", faults=FaultConfig(step_delay=STEP_DELAY), max_running=CONCURRENT
    ) as svc:
        timeline = Timeline(svc.state)
        cfg = write_sweep_config(
            folder / "sweep", base_url=svc.base_url, n_trials=N_TRIALS,
            max_concurrent=CONCURRENT, poll_interval=poll, search=SEARCH_BATCH,
            fixed={"lora": True, "n_epochs": 1},
        )  # fmt: skip
        events = Events()
        run_local_sweep(cfg, svc.api_key, observer=events)
    closed = events.by_job("closed")
    terminal = sorted(timeline.terminal)
    to_closed = [closed[job] - t for t, job, _ in terminal if job in closed]
    created = sorted(t for t, _ in timeline.created)
    to_next = [
        created[i + CONCURRENT] - t
        for i, (t, _, _) in enumerate(terminal)
        if i + CONCURRENT < len(created)
    ]
    return to_closed, to_next


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for poll in (0.5, 0.2):
            to_closed, to_next = measure(Path(tmp) / f"poll{poll}", poll)
            goal = poll + 0.05
            med_next = median(to_next)
            ms = [
                v * 1000
                for v in (median(to_closed), quantile(to_closed, 0.9), med_next,
                          quantile(to_next, 0.9))
            ]  # fmt: skip
            print(
                f"  poll {poll} s: {len(to_closed)} closes, {len(to_next)} refills; closed "
                f"median {ms[0]:.0f} ms, p90 {ms[1]:.0f} ms; next created median {ms[2]:.0f} ms, "
                f"p90 {ms[3]:.0f} ms"
            )
            rows += [
                Row("3", f"terminal -> closed, poll {poll} s, median", median(to_closed) * 1000,
                    "ms", f"<= {goal * 1000:.0f}", median(to_closed) <= goal),
                Row("3", f"terminal -> closed, poll {poll} s, p90",
                    quantile(to_closed, 0.9) * 1000, "ms"),
                Row("3", f"terminal -> next job created, poll {poll} s, median", med_next * 1000,
                    "ms", f"<= {goal * 1000:.0f}", med_next <= goal),
                Row("3", f"terminal -> next job created, poll {poll} s, p90",
                    quantile(to_next, 0.9) * 1000, "ms"),
            ]  # fmt: skip
    return rows


def main() -> None:
    print_table(run())


if __name__ == "__main__":
    main()
