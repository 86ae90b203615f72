"""`sweep compare`: one row per trial, best first, as a table, CSV, JSON or Markdown.

The rows come from :func:`sweeper.report.data.load_trials`; this module only ranks, sorts and
formats them. The best trial (one objective) or the Pareto front (several) is marked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.report.context import ReportContext
from sweeper.report.data import TrialRow, load_sweep, load_trials, read_session

# columns every row has; an objective whose metric name collides gets an `objective_` prefix
FIXED_COLUMNS = (
    "number",
    "state",
    "job_id",
    "job_status",
    "attempts",
    "trained_tokens",
    "cost",
    "duration_s",
)
SORT_COLUMNS = {
    "number": "number",
    "trained_tokens": "trained_tokens",
    "tokens": "trained_tokens",
    "cost": "cost",
    "duration": "duration_s",
    "duration_s": "duration_s",
    "attempts": "attempts",
}
_STATE_RANK = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}


class UnknownSortKey(ValueError):
    """``--sort`` named no metric, param or column; ``valid`` lists what it accepts."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name = name
        self.valid = list(valid)
        super().__init__(f"unknown sort key {name!r}; choose one of: {', '.join(self.valid)}")


def objective_columns(metrics: Sequence[str]) -> list[str]:
    """Column names of the objective values, named by metric (prefixed when they collide)."""
    reserved = {*FIXED_COLUMNS, "values", "params", "best", "pareto", "model", "duration"}
    return [f"objective_{m}" if m in reserved else m for m in metrics]


def _minimizing(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-v if d == "maximize" else v for v, d in zip(values, directions, strict=False))


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """a dominates b when it is no worse on every objective and better on one (minimizing)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto_indices(points: Sequence[tuple[float, ...]]) -> set[int]:
    """Indices of the non-dominated points (minimizing every coordinate).

    Sorting lexicographically first means a point can only be dominated by one before it, and
    only a front member needs checking: O(n * front size), fast enough for 10,000 trials.
    """
    order = sorted(range(len(points)), key=lambda i: points[i])
    front: list[int] = []
    for i in order:
        p = points[i]
        if any(_dominates(points[j], p) for j in front):
            continue
        front.append(i)
    return set(front)


def _usable(row: TrialRow, n: int) -> bool:
    return (
        row.state == "COMPLETE"
        and row.values is not None
        and len(row.values) == n
        and all(math.isfinite(v) for v in row.values)
    )


def mark_best(rows: Sequence[TrialRow], directions: Sequence[str]) -> None:
    """Set ``best`` on the best COMPLETE trial (one objective) or ``pareto`` on the front."""
    done = [r for r in rows if _usable(r, len(directions))]
    if not done:
        return
    points = [_minimizing(r.values or [], directions) for r in done]
    if len(directions) == 1:
        best = min(range(len(done)), key=lambda i: (points[i], done[i].number))
        done[best].best = True
        done[best].pareto = True
        return
    for i in pareto_indices(points):
        done[i].pareto = True


def sort_names(ctx: ReportContext, rows: Sequence[TrialRow]) -> list[str]:
    """Every name `--sort` accepts: metrics, columns, params (bare or `param_` prefixed)."""
    return [*ctx.metrics, *SORT_COLUMNS, *param_names(rows)]


def param_names(rows: Sequence[TrialRow]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k in r.params:
            seen.setdefault(k, None)
    return sorted(seen)


def _value_key(v: Any) -> tuple[int, Any]:
    """Missing last; numbers before strings so mixed categorical params still sort."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0)
    if isinstance(v, bool | int | float):
        return (0, float(v))
    return (1, str(v))


def _default_key(
    directions: Sequence[str],
) -> Callable[[TrialRow], tuple[Any, ...]]:
    n = len(directions)

    def key(r: TrialRow) -> tuple[Any, ...]:
        if _usable(r, n):
            # the best (or the front) first, then by the objectives in their directions
            return (
                0,
                0 if (r.best or r.pareto) else 1,
                _minimizing(r.values or [], directions),
                r.number,
            )
        return (1, _STATE_RANK.get(r.state, 9), (), r.number)

    return key


def sort_rows(
    rows: Sequence[TrialRow], ctx: ReportContext, sort_by: str | None = None
) -> list[TrialRow]:
    """Rows in display order. Default: the objective, best first, unfinished trials last."""
    if sort_by is None:
        return sorted(rows, key=_default_key(ctx.directions))
    if sort_by in ctx.metrics:
        i = ctx.metrics.index(sort_by)
        sign = -1.0 if ctx.directions[i] == "maximize" else 1.0

        def metric_key(r: TrialRow) -> tuple[Any, ...]:
            v = r.values[i] if r.values is not None and len(r.values) > i else None
            if v is None or not math.isfinite(v):
                return (1, _STATE_RANK.get(r.state, 9), 0.0, r.number)
            return (0, 0, sign * v, r.number)

        return sorted(rows, key=metric_key)
    if sort_by in SORT_COLUMNS:
        attr = SORT_COLUMNS[sort_by]
        return sorted(rows, key=lambda r: (_value_key(getattr(r, attr)), r.number))
    params = param_names(rows)
    name = sort_by.removeprefix("param_")
    if name in params:
        return sorted(rows, key=lambda r: (_value_key(r.params.get(name)), r.number))
    raise UnknownSortKey(sort_by, sort_names(ctx, rows))


@dataclass
class Comparison:
    ctx: ReportContext
    rows: list[TrialRow]
    params: list[str]


def compare(ctx: ReportContext, sort_by: str | None = None, top: int | None = None) -> Comparison:
    """Load, rank and order the sweep's trials; ``top`` keeps the first N in that order."""
    with read_session(ctx.storage_url) as session:
        sweep = load_sweep(session, ctx)
        rows = load_trials(session, sweep.id, ctx.price_per_million_tokens)
    mark_best(rows, ctx.directions)
    ordered = sort_rows(rows, ctx, sort_by)
    if top is not None:
        ordered = ordered[:top]
    return Comparison(ctx=ctx, rows=ordered, params=param_names(rows))


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def to_records(cmp: Comparison) -> list[dict[str, Any]]:
    """JSON-ready dicts: the contract keys plus metric-named values and the best/pareto flags."""
    names = objective_columns(cmp.ctx.metrics)
    out: list[dict[str, Any]] = []
    for r in cmp.rows:
        values = [_finite(v) for v in r.values] if r.values is not None else None
        rec: dict[str, Any] = {
            "number": r.number,
            "state": r.state,
            "values": values,
        }
        for i, name in enumerate(names):
            rec[name] = values[i] if values is not None and len(values) > i else None
        rec.update(
            params=r.params,
            model=r.model,
            job_id=r.job_id,
            job_status=r.job_status,
            attempts=r.attempts,
            trained_tokens=r.trained_tokens,
            cost=round(r.cost, 6),
            duration_s=r.duration_s,
            best=r.best,
            pareto=r.pareto,
        )
        out.append(rec)
    return out


def flat_records(cmp: Comparison) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows with params flattened to `param_<name>` columns."""
    names = objective_columns(cmp.ctx.metrics)
    pcols = [f"param_{p}" for p in cmp.params]
    columns = [
        "number",
        "state",
        *names,
        *pcols,
        "job_id",
        "job_status",
        "attempts",
        "trained_tokens",
        "cost",
        "duration_s",
        "best",
        "pareto",
    ]
    flat = []
    for rec in to_records(cmp):
        params = rec.pop("params")
        rec.pop("values")
        rec.pop("model")
        for p in cmp.params:
            rec[f"param_{p}"] = params.get(p)
        flat.append(rec)
    return columns, flat


def render_json(cmp: Comparison) -> str:
    """A JSON array, one trial per line (json's C encoder only runs without `indent`)."""
    records = to_records(cmp)
    if not records:
        return "[]"
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]"


def render_csv(cmp: Comparison) -> str:
    columns, rows = flat_records(cmp)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for rec in rows:
        writer.writerow({k: "" if v is None else v for k, v in rec.items()})
    return buf.getvalue()


def fmt_value(v: Any) -> str:
    """A cell: floats to 4 significant digits, missing as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def display_rows(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by the terminal table and Markdown."""
    mark = "best" if not cmp.ctx.multi_objective else "pareto"
    names = objective_columns(cmp.ctx.metrics)
    header = [
        mark,
        "trial",
        "state",
        *names,
        *cmp.params,
        "job id",
        "job status",
        "attempts",
        "tokens",
        "cost",
        "duration",
    ]
    body = []
    for r in cmp.rows:
        flag = r.best if not cmp.ctx.multi_objective else r.pareto
        vals = r.values or []
        body.append(
            [
                "*" if flag else "",
                str(r.number),
                r.state,
                *[fmt_value(vals[i] if i < len(vals) else None) for i in range(len(names))],
                *[fmt_value(r.params.get(p)) for p in cmp.params],
                r.job_id or "-",
                r.job_status or "-",
                str(r.attempts),
                f"{r.trained_tokens:,}",
                f"{r.cost:.4f}",
                fmt_duration(r.duration_s),
            ]
        )
    return header, body


def plain_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Space-aligned columns: text left, numbers right."""
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    left = {"state", "job id", "job status"}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if h in left else c.rjust(w)
            for c, w, h in zip(cells, widths, header, strict=True)
        ).rstrip()

    return "\n".join([line(header), *(line(row) for row in body)])


def render_markdown(cmp: Comparison) -> str:
    header, body = display_rows(cmp)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out.extend(line(row) for row in body)
    return "\n".join(out) + "\n"


RICH_MAX_ROWS = 500  # rich lays out ~1,500 rows/s; beyond this a plain aligned table


def render_table(cmp: Comparison) -> Any:
    """A rich Table (the caller prints it), or aligned plain text for very long tables."""
    from rich.table import Table
    from rich.text import Text

    header, body = display_rows(cmp)
    if len(body) > RICH_MAX_ROWS:
        return Text(plain_table(header, body), no_wrap=True, overflow="ignore")
    mark = "the best trial" if not cmp.ctx.multi_objective else "the Pareto front"
    table = Table(
        title=f"sweep {cmp.ctx.sweep_name}: {len(cmp.rows)} trials",
        caption=f"* marks {mark}",
    )
    for i, name in enumerate(header):
        numeric = name not in ("state", "job id", "job status") and i > 0
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for cells in body:
        table.add_row(*cells, style="bold green" if cells[0] else None)
    return table


# --- several sweeps side by side --------------------------------------------------------------


def best_of(ctx: ReportContext) -> list[dict[str, Any]]:
    """The best trial (or the Pareto front) of one sweep, as flat records with `sweep` first."""
    cmp = compare(ctx)
    chosen = [r for r in cmp.rows if r.best or r.pareto]
    out = []
    for rec in to_records(Comparison(ctx=ctx, rows=chosen, params=cmp.params)):
        out.append({"sweep": ctx.sweep_name, "metrics": list(ctx.metrics), **rec})
    if not chosen:
        out.append(
            {
                "sweep": ctx.sweep_name,
                "metrics": list(ctx.metrics),
                "number": None,
                "state": None,
                "values": None,
                "params": {},
                "job_id": None,
            }
        )
    return out


def render_side_by_side(records: list[dict[str, Any]], fmt: str) -> Any:
    """One row per sweep's best trial, in the requested format (a rich Table for `table`)."""
    if fmt == "json":
        return json.dumps(records, indent=2)
    header = ["sweep", "trial", "value(s)", "params", "job id"]
    body = []
    for rec in records:
        vals = rec.get("values")
        body.append(
            [
                str(rec["sweep"]),
                fmt_value(rec.get("number")),
                ", ".join(f"{m}={fmt_value(v)}" for m, v in zip(rec["metrics"], vals, strict=False))
                if vals
                else "-",
                ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(rec["params"].items())) or "-",
                rec.get("job_id") or "-",
            ]
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    table = Table(title="best trial of each sweep")
    for name in header:
        table.add_column(name)
    for row in body:
        table.add_row(*row)
    return table
