"""Optuna's side of a sweep: distributions, sampler, pruner, the study itself."""

from __future__ import annotations

import itertools
import random
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeper.config import CategoricalParam, Config, FloatParam, IntParam
from sweeper.errors import ConfigError

# a trial's user attribute linking it to the attempt that asked for it
LAUNCH_REF_ATTR = "sweeper_launch_ref"
JOB_ID_ATTR = "job_id"


def distributions(cfg: Config) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, spec in cfg.search.items():
        if isinstance(spec, CategoricalParam):
            out[name] = CategoricalDistribution(list(spec.choices))
        elif isinstance(spec, IntParam):
            out[name] = IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, FloatParam):
            out[name] = FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return out


def grid_space(cfg: Config) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    for name, spec in cfg.search.items():
        if isinstance(spec, CategoricalParam):
            space[name] = list(spec.choices)
        elif isinstance(spec, IntParam):
            space[name] = list(range(spec.low, spec.high + 1, spec.step))
        elif isinstance(spec, FloatParam) and spec.step is not None:
            n = round((spec.high - spec.low) / spec.step)
            space[name] = [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
    return space


def grid_points(cfg: Config) -> list[dict[str, Any]]:
    """Every point of the grid, in a seeded shuffled order.

    sweeper hands grid points out itself, inside the claim lock, so each runs exactly once
    across resumes and workers (Optuna's GridSampler can hand one point to two workers).
    """
    space = grid_space(cfg)
    names = list(space)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*space.values())]
    random.Random(cfg.sweep.seed).shuffle(points)
    return points


def make_sampler(cfg: Config, seed: int | None) -> optuna.samplers.BaseSampler:
    """The configured sampler. ``seed`` is the effective seed (see Runner: it differs per worker
    and per resume so a restarted sampler does not replay the same random start)."""
    name = cfg.sweep.sampler
    opts = dict(cfg.sweep.sampler_options)
    multi = len(cfg.sweep.metrics) > 1
    try:
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=not multi, **opts)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        if name == "grid":
            # every param of a grid trial is fixed by grid_points(); nothing is left to sample
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "cmaes":
            # categorical params fall back to random sampling by design; one warning per trial
            # would drown the run's output
            opts.setdefault("warn_independent_sampling", False)
            return optuna.samplers.CmaEsSampler(seed=seed, **opts)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **opts)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
        if name == "gp":
            try:
                import torch  # type: ignore[import-not-found]  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "sweep.sampler: 'gp' needs PyTorch; install sweeper[gp] or pick another"
                ) from None
            return optuna.samplers.GPSampler(seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep.sampler_options: {exc}") from exc
    raise ConfigError(f"sweep.sampler: unknown sampler {name!r}")


def make_pruner(cfg: Config) -> optuna.pruners.BasePruner:
    p = cfg.pruning
    if p.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
            n_min_trials=p.n_min_trials,
        )
    if p.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile,
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
            n_min_trials=p.n_min_trials,
        )
    if p.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=p.max_resource,
            reduction_factor=p.reduction_factor,
        )
    if p.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource,
            reduction_factor=p.reduction_factor,
            min_early_stopping_rate=p.min_early_stopping_rate,
        )
    return optuna.pruners.NopPruner()


def open_study(cfg: Config, storage: optuna.storages.BaseStorage, seed: int | None) -> optuna.Study:
    return optuna.create_study(
        storage=storage,
        study_name=cfg.sweep.name,
        load_if_exists=True,
        sampler=make_sampler(cfg, seed),
        pruner=make_pruner(cfg),
        directions=directions(cfg),
    )


def directions(cfg: Config) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection[d.upper()] for d in cfg.sweep.directions]


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; sweeper renders its own lines."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
