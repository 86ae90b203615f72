"""Every sampler the config names runs a sweep end to end, seeded."""

from __future__ import annotations

import importlib.util

import pytest

from sweeper.config import load_config
from sweeper.engine.service import run_sweep
from sweeper.errors import ConfigError


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc", "nsga2", "grid"])
def test_each_sampler_runs_a_sweep(sampler, local_service, service_env, make_config, rows_of):
    """A 3-trial sweep with each sampler closes 3 trials, each with its own job."""
    search = {"type": "categorical", "choices": [1e-4, 3e-4, 6e-4]} if sampler == "grid" else {}
    path = make_config(
        local_service,
        sweep={"n_trials": 3, "sampler": sampler, "seed": 5},
        search__learning_rate=search or {"low": 1e-4, "high": 1e-3},
        search__lora_r={"type": "int", "low": 8, "high": 32},
    )
    result = run_sweep(load_config(path), env=service_env)
    assert sum(result.counts.values()) == 3
    rows = rows_of(path)
    assert len({a.job_id for a in rows}) == 3 and all(a.state == "closed" for a in rows)


def test_gp_needs_torch_or_says_how_to_get_it(local_service, service_env, make_config):
    """sampler = "gp" runs when PyTorch is installed, and otherwise is refused before anything
    is spent with a message naming the `sweeper[gp]` extra."""
    path = make_config(local_service, sweep={"n_trials": 2, "sampler": "gp"})
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ConfigError, match=r"sweeper\[gp\]"):
            run_sweep(load_config(path), env=service_env)
        assert not (path.parent / "sweeps.db").exists()
    else:
        assert sum(run_sweep(load_config(path), env=service_env).counts.values()) == 2
