"""`sweep status` and `sweep show`, and the read side's promise never to write the database."""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper import cli as cli_module
from sweeper.cli import cli
from sweeper.report.context import BudgetLimits, ReportContext
from sweeper.report.status import sweep_status


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


sweepdb = _load("test_report_sweepdb")
write_config = sweepdb.write_config
SECRET = "sk-SECRET-do-not-print-0123456789"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    sweepdb.build_sweep(folder / "s.db", sweepdb.demo_trials(), name="demo",
                        stop_reason="budget: max_trained_tokens reached")
    return write_config(folder, "demo", folder / "s.db")


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sweepdb.build_multi(tmp_path_factory.mktemp("multi"))


invoke = sweepdb.invoke


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the console entry point as a user would; return its exit code and all output."""
    monkeypatch.setattr(sys, "argv", ["sweep", *argv])
    with pytest.raises(SystemExit) as exc:
        cli_module.main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def test_status_counts_budget_workers_best(single: Path) -> None:
    """status shows counts by state, spend vs budget, failures vs limit, live workers, best."""
    out = invoke("status", str(single))
    assert "COMPLETE 3  PRUNED 1  FAIL 1  RUNNING 1  WAITING 1" in out
    assert "24,000 trained; 76,000 left of 100,000" in out
    assert "1 of at most 3" in out
    assert "w0-demo" in out and "old-demo" not in out  # the stopped worker is not active
    assert "budget: max_trained_tokens reached" in out
    best = out[out.index("best so far"):]
    assert "ftjob-demo-00001-2" in best and "0.5" in best
    flight = out[out.index("jobs in flight"):]
    assert "ftjob-demo-00004-1" in flight and "10/30 steps" in flight and "queued" in flight


def test_status_multi_objective_front_size(multi: Path) -> None:
    """For several objectives status gives the Pareto front's size and members."""
    out = invoke("status", str(multi))
    assert "Pareto front (3 trials)" in out


def test_status_model_cost_and_limits(single: Path) -> None:
    """sweep_status adds cost over every attempt and lists only heartbeating workers."""
    url = f"sqlite:///{single.parent / 's.db'}"
    st = sweep_status(ReportContext("demo", url, price_per_million_tokens=2.0,
                                    budget=BudgetLimits(max_cost=1.0)))
    assert st.trained_tokens == 24_000 and st.cost == pytest.approx(0.048)
    assert [w.id for w in st.workers] == ["w0-demo"]
    assert [r.number for r in st.in_flight] == [4, 5]


def test_show_lists_attempts_events_metrics(single: Path) -> None:
    """show: params, resolved hyperparameters, each attempt's job and error, metrics, events."""
    out = invoke("show", str(single), "1")
    assert "learning_rate=0.0003" in out and "packing=true" in out
    assert "meta-llama/Llama-3.1-8B-Instruct" in out
    assert "attempt 1 of 2" in out and "attempt 2 of 2" in out
    assert "ftjob-demo-00001-1" in out and "ftjob-demo-00001-2" in out
    assert "server_error: node lost" in out
    assert "Node restarted" in out and "warn" in out
    assert "per-epoch metrics" in out and "0.55" in out and "valid_mean_token_accuracy" in out
    assert "valid_loss=0.5" in out and "COMPLETE" in out


def test_show_failed_trial_error(single: Path) -> None:
    """A failed trial shows its error code and message."""
    out = invoke("show", str(single), "3")
    assert "FAIL" in out and "diverged: loss became NaN at step 12" in out


def test_show_unknown_trial_exits_2(single: Path) -> None:
    """An unknown trial number is a usage error naming the range of trials."""
    result = CliRunner().invoke(cli, ["show", str(single), "99"])
    assert result.exit_code == 2
    assert "no trial 99" in result.output and "0..6" in result.output


def _fingerprint(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


def test_reading_never_writes(single: Path, tmp_path: Path) -> None:
    """status, compare, show and report leave the database file byte-for-byte unchanged."""
    db = single.parent / "s.db"
    before = _fingerprint(db)
    invoke("status", str(single))
    invoke("compare", str(single), "--format", "json")
    invoke("show", str(single), "2")
    invoke("report", str(single), "--out", str(tmp_path / "r.html"))
    assert _fingerprint(db) == before


def test_missing_database_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A storage file that does not exist is reported (exit 1) and not created."""
    db = tmp_path / "nope.db"
    cfg = write_config(tmp_path, "ghost", db)
    for command in (["status"], ["compare"], ["show", "--", "0"], ["report", "--out", "r.html"]):
        argv = [command[0], str(cfg), *command[1:]]
        code, out = run_main(argv, monkeypatch, capsys)
        assert code == 1, out
        assert "no database at" in out and "run `sweep run CONFIG` first" in out
    assert not db.exists()


def test_unknown_sweep_and_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          single: Path) -> None:
    """No such sweep, or no sweeper tables, is one clear line (exit 1); no table is created."""
    other = write_config(tmp_path, "other", single.parent / "s.db")
    code, out = run_main(["compare", str(other)], monkeypatch, capsys)
    assert code == 1 and "no sweep named 'other' in sqlite:///" in out
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    cfg = write_config(tmp_path, "demo", empty)
    code, out = run_main(["status", str(cfg)], monkeypatch, capsys)
    assert code == 1 and "no sweeper tables" in out
    con = sqlite3.connect(empty)
    try:
        assert con.execute("select count(*) from sqlite_master").fetchone() == (0,)
    finally:
        con.close()


def test_reads_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    """On a WAL database, compare answers while another connection is mid-write."""
    db = tmp_path / "w.db"
    sweepdb.build_sweep(db, sweepdb.demo_trials(), name="demo")
    cfg = write_config(tmp_path, "demo", db)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE sweep_sweeps SET stop_reason = 'uncommitted'")
        out = invoke("status", str(cfg))
        assert "uncommitted" not in out and "COMPLETE 3" in out
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_secrets_never_printed(single: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An API key in the environment appears in no output of the read side, nor the report."""
    monkeypatch.setenv("NEBIUS_API_KEY", SECRET)
    outputs = [invoke("status", str(single)), invoke("show", str(single), "1"),
               invoke("compare", str(single), "--format", "json"),
               invoke("report", str(single), "--out", str(tmp_path / "r.html"))]
    outputs.append((tmp_path / "r.html").read_text())
    assert not any(SECRET in o for o in outputs)
