"""`sweep compare`: rows, best/Pareto marks, sorting, --top, formats, --with."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli
from sweeper.report.compare import compare, pareto_indices, sort_rows
from sweeper.report.context import ReportContext


def _sweepdb():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "report_sweepdb", Path(__file__).with_name("test_report_sweepdb.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["report_sweepdb"] = mod
    spec.loader.exec_module(mod)
    return mod


sweepdb = _sweepdb()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    sweepdb.build_sweep(folder / "s.db", sweepdb.demo_trials(), name="demo")
    return sweepdb.write_config(folder, "demo", folder / "s.db")


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sweepdb.build_multi(tmp_path_factory.mktemp("multi"))


invoke = sweepdb.invoke


def test_json_has_contract_keys_and_values(single: Path) -> None:
    """JSON rows carry the contract keys with the stored values, one row per trial."""
    rows = json.loads(invoke("compare", str(single), "--format", "json"))
    assert [r["number"] for r in rows] == [1, 6, 0, 2, 3, 4, 5]  # best first, unfinished last
    by_num = {r["number"]: r for r in rows}
    retried = by_num[1]
    assert retried["state"] == "COMPLETE" and retried["values"] == [0.5]
    assert retried["valid_loss"] == 0.5
    assert retried["params"] == {"learning_rate": 3e-4, "lora_r": 16, "n_epochs": 3}
    assert retried["job_id"] == "ftjob-demo-00001-2"  # the last attempt's job
    assert retried["job_status"] == "succeeded"
    assert retried["attempts"] == 2
    assert retried["trained_tokens"] == 4000  # both attempts count
    assert retried["cost"] == pytest.approx(4000 / 1e6 * 0.4)
    assert retried["duration_s"] == pytest.approx(721.0)
    assert {by_num[n]["state"] for n in (2, 3, 4, 5)} == {"PRUNED", "FAIL", "RUNNING", "WAITING"}
    assert by_num[4]["values"] is None and by_num[4]["duration_s"] is None
    assert [r["number"] for r in rows if r["best"]] == [1]


def test_table_marks_best(single: Path) -> None:
    """The terminal table marks exactly the best trial's row."""
    out = invoke("compare", str(single))
    marked = [line for line in out.splitlines() if "│ *" in line]
    assert len(marked) == 1 and "ftjob-demo-00001-2" in marked[0]


def test_pareto_front_multi_objective(multi: Path) -> None:
    """With two objectives the non-dominated COMPLETE trials are flagged, nothing is `best`."""
    rows = json.loads(invoke("compare", str(multi), "--format", "json"))
    assert sorted(r["number"] for r in rows if r["pareto"]) == [0, 1, 6]
    assert not any(r["best"] for r in rows)
    t7 = next(r for r in rows if r["number"] == 7)
    assert t7["valid_loss"] == 0.8 and t7["objective_cost"] == 3.5  # 'cost' is also a column


def test_pareto_indices_handles_ties_and_maximize() -> None:
    """Equal points are both on the front; a point worse on one objective only is dominated."""
    pts = [(1.0, 2.0), (1.0, 2.0), (2.0, 1.0), (2.0, 2.0), (0.5, 3.0)]
    assert pareto_indices(pts) == {0, 1, 2, 4}


def test_top_and_sort(single: Path) -> None:
    """--sort orders by a metric, param or column; --top keeps the first N of that order."""
    rows = json.loads(invoke("compare", str(single), "--format", "json", "--top", "2"))
    assert [r["number"] for r in rows] == [1, 6]
    rows = json.loads(invoke("compare", str(single), "--format", "json", "--sort",
                             "learning_rate"))
    lrs = [r["params"]["learning_rate"] for r in rows]
    assert lrs == sorted(lrs)
    rows = json.loads(invoke("compare", str(single), "--format", "json", "--sort", "cost",
                             "--top", "3"))
    assert [r["trained_tokens"] for r in rows] == [0, 1000, 3000]
    rows = json.loads(invoke("compare", str(single), "--format", "json", "--sort", "number"))
    assert [r["number"] for r in rows] == list(range(7))


def test_sort_maximize_puts_largest_first(single: Path) -> None:
    """A maximized metric sorts descending, trials without a value last."""
    ctx = ReportContext("demo", _url(single), directions=["maximize"])
    rows = sort_rows(compare(ctx).rows, ctx, "valid_loss")
    assert [r.number for r in rows][:3] == [0, 6, 1]


def _url(cfg: Path) -> str:
    return f"sqlite:///{cfg.parent / 's.db'}"


def test_unknown_sort_key_exits_2_listing_names(single: Path) -> None:
    """An unknown --sort is a usage error (exit 2) naming the valid metrics, params, columns."""
    result = CliRunner().invoke(cli, ["compare", str(single), "--sort", "bogus"])
    assert result.exit_code == 2
    assert "bogus" in result.output
    for name in ("valid_loss", "learning_rate", "trained_tokens", "duration"):
        assert name in result.output


def test_csv_and_markdown_are_flat(single: Path) -> None:
    """CSV and Markdown have one column per param, prefixed `param_` in CSV."""
    text = invoke("compare", str(single), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 7
    assert {"param_learning_rate", "param_lora_r", "param_n_epochs", "valid_loss",
            "job_id", "attempts", "cost", "duration_s"} <= set(rows[0])
    assert rows[0]["number"] == "1" and rows[0]["param_lora_r"] == "16"
    md = invoke("compare", str(single), "--format", "markdown").splitlines()
    assert md[0].startswith("| best | trial | state | valid_loss | learning_rate")
    assert md[1].startswith("|---|") and len(md) == 2 + 7


def test_with_shows_best_of_each_sweep(single: Path, multi: Path) -> None:
    """--with lists each sweep's best trial (or Pareto front) with its values and job."""
    rows = json.loads(invoke("compare", str(single), "--with", str(multi), "--format", "json"))
    assert (rows[0]["sweep"], rows[0]["number"]) == ("demo", 1)
    assert sorted(r["number"] for r in rows if r["sweep"] == "multi") == [0, 1, 6]
    table = invoke("compare", str(single), "--with", str(multi))
    assert "valid_loss=0.5" in table and "ftjob-multi-00006-1" in table
