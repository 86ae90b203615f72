"""Turn a finished job into the trial's objective value(s)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from sweeper.config import Config
from sweeper.errors import ConfigError, EvaluatorError

# provider error codes that mean "the provider failed, not your job": worth a new attempt
TRANSIENT_ERROR_CODES = frozenset(
    {"internal_error", "internal_server_error", "server_error", "infrastructure_error", "timeout"}
)


def is_transient_failure(code: str | None, message: str | None) -> bool:
    if code and code.lower() in TRANSIENT_ERROR_CODES:
        return True
    text = (message or "").lower()
    return "resubmit" in text or "internal error" in text or " 500" in text


def metric_series(checkpoints: Sequence[Any], metric: str) -> list[tuple[int, float]]:
    """(step, value) of a loss metric across checkpoints, ordered by step, finite values only."""
    out = []
    for ck in sorted(checkpoints, key=lambda c: c.step_number):
        value = getattr(ck, metric, None)
        if value is None and isinstance(getattr(ck, "metrics", None), dict):
            value = ck.metrics.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append((ck.step_number, float(value)))
    return out


def compute_values(
    cfg: Config, checkpoints: Sequence[Any], trained_tokens: int | None
) -> list[float]:
    """The built-in metrics; raises ValueError with a readable reason when one is missing."""
    values = []
    for metric in cfg.sweep.metrics:
        if metric in ("valid_loss", "train_loss"):
            series = metric_series(checkpoints, metric)
            if not series:
                hint = " (no validation_file?)" if metric == "valid_loss" else ""
                raise ValueError(f"the job reported no {metric}{hint}")
            picked = (
                series[-1][1] if cfg.sweep.metric_reduce == "last" else min(v for _, v in series)
            )
            values.append(picked)
        elif metric == "trained_tokens":
            if trained_tokens is None:
                raise ValueError("the job reported no trained_tokens")
            values.append(float(trained_tokens))
        elif metric == "cost":
            if trained_tokens is None:
                raise ValueError("the job reported no trained_tokens")
            values.append(trained_tokens / 1e6 * cfg.price_per_million_tokens)
        else:
            raise ValueError(f"metric {metric!r} needs an [objective] evaluator")
    return values


def load_evaluator(spec: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"objective.evaluator: cannot import {spec!r}: {exc}") from exc
    if not callable(func):
        raise ConfigError(f"objective.evaluator: {spec!r} is not callable")
    return func  # type: ignore[no-any-return]


def run_evaluator(
    func: Callable[[dict[str, Any]], Any], record: dict[str, Any], n_values: int
) -> list[float]:
    """Call the user's evaluator; any exception becomes EvaluatorError (the trial fails)."""
    try:
        result = func(record)
    except Exception as exc:  # the user's code: anything may come out
        raise EvaluatorError(f"evaluator raised {type(exc).__name__}: {exc}") from exc
    values = list(result) if isinstance(result, list | tuple) else [result]
    if len(values) != n_values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise EvaluatorError(f"evaluator returned {result!r}; expected {n_values} number(s)")
    return [float(v) for v in values]
