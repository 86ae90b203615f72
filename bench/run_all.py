"""Run every benchmark of bench/ in one go and print one table (about 3-4 minutes on 2 cores).

    .venv/bin/python bench/run_all.py [--only overhead,requests,reaction,scale]

Sections: 1 overhead against a hand-written loop (bench_overhead.py), 2 requests per trial and
per tick (bench_requests.py), 3 reaction time (bench_reaction.py), 4 scale and 5 start-up
(bench_scale.py). All traffic goes to local services on 127.0.0.1 started by the benchmarks;
every folder is temporary. bench_local_service.py and bench_compare.py remain separate.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import bench_overhead
import bench_reaction
import bench_requests
import bench_scale
from _common import Row, print_table

SECTIONS = {
    "overhead": bench_overhead.run,
    "requests": bench_requests.run,
    "reaction": bench_reaction.run,
    "scale": bench_scale.run,
}


def machine() -> str:
    import os

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    opts = ap.parse_args()
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name in opts.only.split(","):
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        rows += SECTIONS[name.strip()]()
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(f"machine: {machine()}; total {time.perf_counter() - t0:.0f} s")
    print_table(rows)
    missed = [r for r in rows if r.ok is False]
    if missed:
        print(f"\n{len(missed)} goal(s) not met: " + "; ".join(r.name for r in missed))


if __name__ == "__main__":
    main()
