"""Goal 2, requests per trial: 8 long jobs in flight, poll interval 0.5 s, counted by route.

Each job is one epoch of the tiny dataset (3 steps) slowed by the service's ``step_delay`` (1 s
per step), so a job lasts about 3 s. A side thread samples the service's own per-route counters
every 20 ms; in the window where every job is in flight and none has finished (from the last
create to the first terminal moment at the service) it gives the requests one tick costs when
nothing changed, with 8 jobs in flight and with 1.

    .venv/bin/python bench/bench_requests.py

Goals: polling cost per tick does not grow with the jobs in flight; <= 8 requests per trial,
uploads included.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import Events, Row, Timeline, print_table, run_local_sweep, write_sweep_config

POLL = 0.5
STEP_DELAY = 1.0


def _sampled_sweep(
    folder: Path, n_trials: int, concurrent: int
) -> tuple[Any, dict[str, int], list[tuple[float, dict[str, int]]], Timeline, Events]:
    """Run a sweep while sampling the service's counters; (result, stats, samples, timeline)."""
    from sweeper.local.embedded import start_embedded
    from sweeper.local.faults import FaultConfig

    samples: list[tuple[float, dict[str, int]]] = []
    done = threading.Event()
    with start_embedded(
        folder / "service", faults=FaultConfig(step_delay=STEP_DELAY), max_running=8
    ) as svc:
        timeline = Timeline(svc.state)

        def sample() -> None:
            while not done.wait(0.02):
                samples.append((time.monotonic(), svc.stats()))

        cfg = write_sweep_config(
            folder / "sweep", base_url=svc.base_url, n_trials=n_trials,
            max_concurrent=concurrent, poll_interval=POLL,
        )  # fmt: skip
        events = Events()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = run_local_sweep(cfg, svc.api_key, observer=events)
        finally:
            done.set()
            sampler.join()
        stats = svc.stats()
    return result, stats, samples, timeline, events


def _route(server_route: str) -> str:
    """The service's route label as the client names it."""
    method, _, path = server_route.partition(" ")
    return f"{method} {path.removeprefix('/v1').replace('{job_id}', '{id}')}"


def _per_tick(
    samples: list[tuple[float, dict[str, int]]], start: float, end: float
) -> tuple[float, int, dict[str, int]]:
    """Requests per list call between ``start`` and ``end`` (all routes), list calls, delta."""
    inside = [s for t, s in samples if start <= t <= end]
    if len(inside) < 2:
        return float("nan"), 0, {}
    delta = Counter(inside[-1])
    delta.subtract(inside[0])
    delta = +delta
    lists = delta.get("GET /v1/fine_tuning/jobs", 0)
    total = sum(delta.values())
    return (total / lists if lists else float("nan")), lists, dict(delta)


def _quiet_window(timeline: Timeline, concurrent: int) -> tuple[float, float]:
    """From the creation of the first wave's last job to the first terminal moment."""
    created = sorted(t for t, _ in timeline.created)
    first_done = min(t for t, _, _ in timeline.terminal)
    return created[concurrent - 1], first_done


def run() -> list[Row]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        n8 = 16
        result, stats, samples, timeline, _ = _sampled_sweep(Path(tmp) / "eight", n8, 8)
        per_tick_8, lists_8, delta_8 = _per_tick(samples, *_quiet_window(timeline, 8))
        _, _, samples1, timeline1, _ = _sampled_sweep(Path(tmp) / "one", 1, 1)
        per_tick_1, lists_1, delta_1 = _per_tick(samples1, *_quiet_window(timeline1, 1))
    client = dict(result.requests)
    server = {_route(k): v for k, v in stats.items()}
    total_client, total_server = sum(client.values()), sum(server.values())
    print(f"  requests by route, {n8} trials, 8 in flight, poll {POLL} s, ~3 s jobs:")
    print(f"    {'route':<46}{'client':>8}{'service':>9}{'per trial':>11}")
    for route in sorted(set(client) | set(server)):
        n, m = client.get(route, 0), server.get(route, 0)
        print(f"    {route:<46}{n:>8}{m:>9}{m / n8:>11.2f}")
    print(f"    {'total':<46}{total_client:>8}{total_server:>9}{total_server / n8:>11.2f}")
    print(f"  quiet window, 8 in flight: {lists_8} ticks, {delta_8}")
    print(f"  quiet window, 1 in flight: {lists_1} ticks, {delta_1}")
    per_trial = total_server / n8
    flat = per_tick_8 <= per_tick_1 + 1e-9
    rows += [
        Row("2", "requests per trial (8 in flight, uploads incl.)", per_trial, "", "<= 8",
            per_trial <= 8, f"{total_server} at the service / {n8} trials"),
        Row("2", "requests per tick, nothing changed, 1 in flight", per_tick_1, "", "", None,
            f"{lists_1} ticks sampled"),
        Row("2", "requests per tick, nothing changed, 8 in flight", per_tick_8, "", "= 1 job's",
            flat, f"{lists_8} ticks sampled"),
        Row("2", "client (RunResult) and service counts agree", None, "", "equal",
            client == server, f"{total_client} vs {total_server}"),
    ]  # fmt: skip
    return rows


def main() -> None:
    print_table(run())


if __name__ == "__main__":
    main()
