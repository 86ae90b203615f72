"""What the read side needs to know about a sweep, independent of the config loader.

The CLI builds a :class:`ReportContext` from the loaded config; tests build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BudgetLimits:
    """The sweep's limits; ``None`` means unlimited."""

    max_trained_tokens: int | None = None
    max_cost: float | None = None
    max_failed_trials: int | None = None
    timeout: float | None = None  # seconds since the sweep started


@dataclass(frozen=True)
class ReportContext:
    """One sweep to read: where it is stored and how its objective is named and directed."""

    sweep_name: str
    storage_url: str
    metrics: list[str] = field(default_factory=lambda: ["valid_loss"])
    directions: list[str] = field(default_factory=lambda: ["minimize"])
    price_per_million_tokens: float = 0.0
    budget: BudgetLimits = field(default_factory=BudgetLimits)
    config_text: str = ""

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


def context_from_config(cfg: object) -> ReportContext:
    """Build the context from a loaded ``sweeper.config.Config`` (duck-typed: no import cycle)."""
    sweep = cfg.sweep  # type: ignore[attr-defined]
    budget = getattr(cfg, "budget", None)
    limits = BudgetLimits(
        max_trained_tokens=getattr(budget, "max_trained_tokens", None),
        max_cost=getattr(budget, "max_cost", None),
        max_failed_trials=getattr(budget, "max_failed_trials", None),
        timeout=getattr(budget, "timeout", None),
    )
    return ReportContext(
        sweep_name=sweep.name,
        storage_url=str(getattr(cfg, "storage_url", sweep.storage)),
        metrics=list(sweep.metrics),
        directions=list(sweep.directions),
        price_per_million_tokens=float(getattr(cfg, "price_per_million_tokens", 0.0) or 0.0),
        budget=limits,
        config_text=str(getattr(cfg, "source_text", "") or ""),
    )
