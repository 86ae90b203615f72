"""`sweep report`: one self-contained HTML page (plotly.js embedded once, works offline).

Optuna's own plotly figures draw the history, parallel coordinates, importances and the Pareto
front from the study; loss curves come from sweeper's checkpoints. Large sweeps are capped where
a figure would stop being readable or fast, and the page says so.
"""

from __future__ import annotations

import html
import json
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.report.compare import (
    Comparison,
    display_rows,
    mark_best,
    param_names,
    sort_rows,
)
from sweeper.report.context import ReportContext
from sweeper.report.data import (
    TrialRow,
    load_checkpoints,
    load_sweep,
    load_trials,
    read_session,
    safe_url,
)

MAX_CURVES_BEST = 40  # COMPLETE trials with loss curves
MAX_CURVES_OTHER = 20  # PRUNED / FAIL / RUNNING trials with loss curves
MAX_IMPORTANCE_TRIALS = 2000  # importances are fitted on a sample above this
MAX_PARALLEL_TRIALS = 500  # optuna draws one trace per trial: ~1 ms each, and unreadable beyond
MIN_IMPORTANCE_TRIALS = 4


@dataclass
class Section:
    title: str
    body: str  # HTML
    note: str = ""


@dataclass
class ReportSummary:
    path: Path
    trials: int
    figures: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_report(ctx: ReportContext, out: str | Path) -> ReportSummary:
    """Read the sweep (never writing it), draw the figures, write one HTML file."""
    started = time.perf_counter()
    out = Path(out)
    with read_session(ctx.storage_url) as session:
        sweep = load_sweep(session, ctx)
        study_name = sweep.study_name
        rows = load_trials(session, sweep.id, ctx.price_per_million_tokens)
        mark_best(rows, ctx.directions)
        ordered = sort_rows(rows, ctx)
        curve_rows, curve_note = _curve_selection(ordered)
        last_ids = [r.attempt_ids[-1] for r in curve_rows]
        checkpoints = {
            aid: [(c.step_number, c.train_loss, c.valid_loss) for c in cks]
            for aid, cks in load_checkpoints(session, last_ids).items()
        }
    cmp = Comparison(ctx=ctx, rows=ordered, params=param_names(rows))
    sections: list[Section] = []
    with _quiet_optuna(), _read_only_study(ctx.storage_url, study_name) as study:
        sections += _optuna_sections(ctx, study, rows)
    sections.insert(
        1, Section("Loss curves", _loss_curves(ctx, curve_rows, checkpoints), curve_note)
    )
    sections.append(Section("Results", _results_table(cmp)))
    sections.append(
        Section("Configuration", f"<pre>{html.escape(ctx.config_text or '(not available)')}</pre>")
    )
    page = _page(ctx, cmp, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return ReportSummary(
        path=out,
        trials=len(rows),
        figures=page.count('class="plotly-graph-div"'),
        notes=[s.note for s in sections if s.note],
        seconds=time.perf_counter() - started,
    )


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


@contextmanager
def _read_only_study(storage_url: str, study_name: str) -> Iterator[Any]:
    """Load the Optuna study without creating tables or writing a row."""
    import optuna
    from sqlalchemy.pool import NullPool

    from sweeper.store.db import refuse_writes

    storage = optuna.storages.RDBStorage(
        storage_url, skip_table_creation=True, engine_kwargs={"poolclass": NullPool}
    )
    refuse_writes(storage.engine)
    try:
        yield optuna.load_study(study_name=study_name, storage=storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _fig_html(fig: Any, height: int = 480) -> str:
    fig.update_layout(height=height, margin={"l": 60, "r": 30, "t": 50, "b": 50})
    body: str = fig.to_html(
        full_html=False, include_plotlyjs=False, config={"responsive": True, "displaylogo": False}
    )
    return body


def _optuna_sections(ctx: ReportContext, study: Any, rows: list[TrialRow]) -> list[Section]:
    """History, Pareto front, parallel coordinates and importances, drawn by optuna.

    The study's trials are read once and copied into an in-memory study (each optuna plot
    re-reads its study, which costs seconds per call on a 10,000-trial RDB study). Figures that
    draw one trace per trial get the best trials only.
    """
    import optuna
    from optuna import visualization as vis

    trials = study.get_trials(deepcopy=False)
    mem = _memory_study(study.directions, trials)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    n_params = len(param_names(rows))
    sections: list[Section] = []

    hist = []
    for i, metric in enumerate(ctx.metrics):
        fig = vis.plot_optimization_history(mem, **_target(ctx, i))
        fig.update_layout(title=f"Optimization history: {metric} ({ctx.directions[i]})")
        hist.append(_fig_html(fig))
    sections.append(
        Section("Optimization history", "".join(hist), "" if complete else "No COMPLETE trial yet.")
    )

    if ctx.multi_objective and complete:
        fig = vis.plot_pareto_front(mem, target_names=ctx.metrics)
        fig.update_layout(title=f"Pareto front ({sum(r.pareto for r in rows)} trials)")
        sections.append(Section("Pareto front", _fig_html(fig, 560)))

    if complete and n_params:
        best = _best_trials(ctx, complete, MAX_PARALLEL_TRIALS)
        note = ""
        if len(best) < len(complete):
            note = (
                f"Showing the {len(best)} best of {len(complete)} COMPLETE trials "
                "(one line per trial)."
            )
        sub = _memory_study(study.directions, best)
        pc = []
        for i, metric in enumerate(ctx.metrics):
            fig = vis.plot_parallel_coordinate(sub, **_target(ctx, i))
            fig.update_layout(title=f"Parallel coordinates: {metric}")
            pc.append(_fig_html(fig))
        sections.append(Section("Parallel coordinates", "".join(pc), note))
    else:
        sections.append(
            Section(
                "Parallel coordinates", "", "Not shown: needs a COMPLETE trial with sampled params."
            )
        )

    if len(complete) >= MIN_IMPORTANCE_TRIALS and n_params >= 2:
        body, note = _importances(ctx, study.directions, complete)
        sections.append(Section("Parameter importances", body, note))
    else:
        sections.append(
            Section(
                "Parameter importances",
                "",
                f"Not shown: needs at least {MIN_IMPORTANCE_TRIALS} COMPLETE trials and 2 sampled "
                f"params (this sweep has {len(complete)} and {n_params}).",
            )
        )
    return sections


def _target(ctx: ReportContext, i: int) -> dict[str, Any]:
    """optuna needs an explicit target to plot one objective of several."""
    kw: dict[str, Any] = {"target_name": ctx.metrics[i]}
    if ctx.multi_objective:
        kw["target"] = lambda t: t.values[i]
    return kw


def _memory_study(directions: list[Any], trials: list[Any]) -> Any:
    """An in-memory copy of these trials whose reads skip the defensive deepcopy.

    optuna's plots only read trials, yet several ask for deep copies: 3 s on 10,000 trials.
    """
    import optuna

    class _ReadOnlyStudy(optuna.Study):
        def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
            return list(super().get_trials(deepcopy=False, states=states))

    storage = optuna.storages.InMemoryStorage()
    name = optuna.create_study(storage=storage, directions=directions).study_name
    mem = _ReadOnlyStudy(study_name=name, storage=storage)
    mem.add_trials(trials)
    return mem


def _best_trials(ctx: ReportContext, complete: list[Any], n: int) -> list[Any]:
    """The n best COMPLETE trials by the first objective, in trial order."""
    sign = -1.0 if ctx.directions[0] == "maximize" else 1.0
    best = sorted(complete, key=lambda t: sign * t.values[0])[:n]
    return sorted(best, key=lambda t: t.number)


def _importances(ctx: ReportContext, directions: list[Any], complete: list[Any]) -> tuple[str, str]:
    from optuna import visualization as vis

    note = ""
    chosen = complete
    if len(complete) > MAX_IMPORTANCE_TRIALS:
        chosen = sorted(
            random.Random(0).sample(complete, MAX_IMPORTANCE_TRIALS), key=lambda t: t.number
        )
        note = (
            f"Importances fitted on a random sample of {MAX_IMPORTANCE_TRIALS} of the "
            f"{len(complete)} COMPLETE trials, to keep the report fast."
        )
    source = _memory_study(directions, chosen)
    figs = []
    try:
        if not ctx.multi_objective:
            figs.append(vis.plot_param_importances(source, target_name=ctx.metrics[0]))
        for i, metric in enumerate(ctx.metrics if ctx.multi_objective else []):
            sign = -1.0 if ctx.directions[i] == "maximize" else 1.0
            with warnings.catch_warnings():
                # optuna warns that a target is minimized; that is why maximized ones are negated
                warnings.filterwarnings("ignore", ".*low `target` values", UserWarning)
                fig = vis.plot_param_importances(
                    source, target=_objective(i, sign), target_name=metric
                )
            fig.update_layout(title=f"Parameter importances for {metric}")
            figs.append(fig)
    except (ValueError, RuntimeError) as exc:  # e.g. every trial has the same params
        return "", f"Not shown: optuna could not compute importances ({exc})."
    return "".join(_fig_html(f, 420) for f in figs), note


def _objective(i: int, sign: float) -> Callable[[Any], float]:
    def target(t: Any) -> float:
        return sign * float(t.values[i])

    return target


def _curve_selection(ordered: list[TrialRow]) -> tuple[list[TrialRow], str]:
    """The best COMPLETE trials plus some pruned/failed/running ones, in display order."""
    complete = [r for r in ordered if r.state == "COMPLETE"]
    other = [r for r in ordered if r.state in ("PRUNED", "FAIL", "RUNNING")]
    chosen = complete[:MAX_CURVES_BEST] + other[:MAX_CURVES_OTHER]
    note = ""
    if len(complete) > MAX_CURVES_BEST or len(other) > MAX_CURVES_OTHER:
        note = (
            f"Showing the {min(len(complete), MAX_CURVES_BEST)} best COMPLETE trials and "
            f"{min(len(other), MAX_CURVES_OTHER)} of the {len(other)} pruned, failed or "
            f"running ones (of {len(ordered)} trials) so the plot stays readable."
        )
    return chosen, note


_DASH = {"COMPLETE": "solid", "PRUNED": "dot", "FAIL": "dash", "RUNNING": "longdash"}


def _loss_curves(
    ctx: ReportContext,
    rows: list[TrialRow],
    checkpoints: dict[int, list[tuple[int, float | None, float | None]]],
) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("train loss", "valid loss"), horizontal_spacing=0.08
    )
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3
    drawn = 0
    for r in rows:
        points = checkpoints.get(r.attempt_ids[-1], [])
        if not points:
            continue
        name = f"trial {r.number} ({r.state.lower()})" + (" best" if r.best else "")
        color = palette[drawn % len(palette)]  # the same colour in both panels
        line = {"dash": _DASH.get(r.state, "solid"), "width": 3 if r.best else 1.5, "color": color}
        steps = [p[0] for p in points]
        for col, idx in ((1, 1), (2, 2)):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[p[idx] for p in points],
                    mode="lines+markers",
                    name=name,
                    legendgroup=str(r.number),
                    showlegend=col == 1,
                    line=line,
                    marker={"size": 6, "color": color},
                    opacity=0.95 if r.state == "COMPLETE" else 0.6,
                    hovertemplate=f"{name}<br>step %{{x}}<br>loss %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        drawn += 1
    if not drawn:
        return "<p class='note'>No checkpoint metrics recorded yet.</p>"
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss")
    fig.update_layout(
        title="Loss by step (solid: complete, dotted: pruned, dashed: failed)",
        legend={"font": {"size": 10}},
    )
    return _fig_html(fig, 520)


def _results_table(cmp: Comparison) -> str:
    header, body = display_rows(cmp)
    numeric = [i for i, h in enumerate(header) if h not in ("state", "job id", "job status")]
    head = "".join(f"<th data-col='{i}'>{html.escape(h)}</th>" for i, h in enumerate(header))
    lines = []
    for row in body:
        cls = " class='best'" if row[0] else ""
        cells = []
        for i, c in enumerate(row):
            sort_key = ""
            if i in numeric:
                sort_key = f" data-v='{html.escape(_num(c))}'"
            cells.append(f"<td{sort_key}>{html.escape(c)}</td>")
        lines.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f"<table id='results' class='sortable'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def _num(cell: str) -> str:
    """Sort key for a numeric cell ('4,000', '12m01s', '-' are all handled)."""
    text = cell.replace(",", "")
    if text == "*":
        return "0"
    try:
        return repr(float(text))
    except ValueError:
        pass
    total, num = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in "hms" and num:
            total += float(num) * {"h": 3600, "m": 60, "s": 1}[ch]
            num = ""
    return repr(total) if total else ""


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col], y = b.cells[col];
      var xv = x.dataset.v, yv = y.dataset.v, r;
      if (xv !== undefined && yv !== undefined) {
        if (xv === '') return 1; if (yv === '') return -1;
        r = parseFloat(xv) - parseFloat(yv);
      } else { r = x.textContent.localeCompare(y.textContent); }
      return asc ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px 40px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
.summary td { padding: 2px 14px 2px 0; } .note { color: #666; font-style: italic; }
table.sortable { border-collapse: collapse; font-size: 13px; }
table.sortable th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
table.sortable th, table.sortable td { border: 1px solid #ddd; padding: 3px 8px; }
table.sortable td[data-v] { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #e8f6e8; font-weight: 600; }
pre { background: #f7f7f7; padding: 12px; overflow-x: auto; }
.tablewrap { max-height: 640px; overflow: auto; }
"""


def _page(ctx: ReportContext, cmp: Comparison, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    counts: dict[str, int] = {}
    for r in cmp.rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    best = [r for r in cmp.rows if r.best or r.pareto]
    best_text = "none yet"
    if best and not ctx.multi_objective:
        b = best[0]
        best_text = (
            f"trial {b.number}: {ctx.metrics[0]} = {b.values[0] if b.values else '-':.4g}"
            f" ({json.dumps(b.params)})"
        )
    elif best:
        best_text = f"Pareto front of {len(best)} trials"
    summary = [
        ("sweep", ctx.sweep_name),
        ("storage", safe_url(ctx.storage_url)),
        (
            "objective",
            ", ".join(f"{m} ({d})" for m, d in zip(ctx.metrics, ctx.directions, strict=False)),
        ),
        ("trials", ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))),
        ("best", best_text),
        ("trained tokens", f"{sum(r.trained_tokens for r in cmp.rows):,}"),
        ("cost", f"{sum(r.cost for r in cmp.rows):.4f}"),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>sweep {html.escape(ctx.sweep_name)}</title>",
        f"<style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>Sweep {html.escape(ctx.sweep_name)}</h1><table class='summary'>",
        *[f"<tr><td><b>{k}</b></td><td>{html.escape(v)}</td></tr>" for k, v in summary],
        "</table>",
    ]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
        if s.title == "Results":
            parts.append(f"<div class='tablewrap'>{s.body}</div>")
            parts.append("<p class='note'>Click a column header to sort.</p>")
        else:
            parts.append(s.body)
        parts.append("</section>")
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)
