"""`sweep report`: one offline HTML file with the plots, checked as text and in Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


sweepdb = _load("test_report_sweepdb")
write_config = sweepdb.write_config
CHROMIUM = "/usr/bin/chromium"


def _report(cfg: Path, out: Path) -> str:
    result = CliRunner().invoke(cli, ["report", str(cfg), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def single_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep with enough COMPLETE trials for importances, plus the demo's other states."""
    folder = tmp_path_factory.mktemp("single")
    trials = sweepdb.demo_trials() + sweepdb.random_trials(12, seed=3)[:8]
    sweepdb.build_sweep(folder / "s.db", trials, name="demo")
    cfg = write_config(folder, "demo", folder / "s.db")
    out = folder / "report.html"
    _report(cfg, out)
    return out


def test_report_is_one_offline_file_with_the_plots(single_report: Path) -> None:
    """The page embeds plotly.js once, loads nothing from the network and has every section."""
    page = single_report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", page)
    assert page.count("plotly.js v") >= 1 and page.count("<script type='text/javascript'>") == 1
    for title in ("Optimization history", "Loss curves", "Parallel coordinates",
                  "Parameter importances", "Results", "Configuration"):
        assert f"<h2>{title}</h2>" in page
    assert page.count('class="plotly-graph-div"') == 4  # history, loss, parallel, importances
    assert "trial 2 (pruned)" in page and '"dash":"dot"' in page  # pruned curves are dotted
    assert "<table id='results' class='sortable'>" in page and "addEventListener" in page
    assert "<tr class='best'>" in page
    assert "[sweep]" in page and 'name = &quot;demo&quot;' in page  # config, escaped


def test_report_notes_missing_importances(tmp_path: Path) -> None:
    """With fewer than 4 COMPLETE trials the page says why importances are absent."""
    sweepdb.build_sweep(tmp_path / "s.db", sweepdb.demo_trials(), name="demo")
    page = _report(write_config(tmp_path, "demo", tmp_path / "s.db"), tmp_path / "r.html")
    assert "Not shown: needs at least 4 COMPLETE trials" in page
    assert page.count('class="plotly-graph-div"') == 3


def test_report_multi_objective_has_pareto_front(tmp_path: Path) -> None:
    """Two objectives: a Pareto front figure and one history per objective."""
    sweepdb.build_sweep(tmp_path / "m.db", sweepdb.demo_trials(multi=True), name="multi",
                        directions=("minimize", "minimize"))
    cfg = write_config(tmp_path, "multi", tmp_path / "m.db", '["valid_loss", "cost"]',
                       '["minimize", "minimize"]')
    page = _report(cfg, tmp_path / "r.html")
    assert "<h2>Pareto front</h2>" in page and "Pareto front (3 trials)" in page
    assert "Optimization history: valid_loss" in page
    assert "Optimization history: cost" in page


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", *args],
        capture_output=True, text=True, timeout=90,
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                    reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)")
def test_report_renders_in_chromium(single_report: Path, tmp_path: Path) -> None:
    """Headless Chromium draws the plots (plotly's SVGs exist) and the screenshot isn't blank."""
    url = single_report.resolve().as_uri()
    dom = _chromium(f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000",
                    "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="plotly-graph-div') >= 4
    assert dom.stdout.count('class="main-svg"') >= 4  # only present once plotly.js has drawn
    png = tmp_path / "r.png"
    shot = _chromium(f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={png}",
                     "--window-size=1400,3000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    # an all-white 1400x3000 PNG compresses to a few kB; plots and tables take far more
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 60_000
