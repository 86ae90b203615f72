"""Bad input is refused before anything is spent: a data-driven corpus through the real CLI.

Each ``tests/bad_inputs/*.toml`` breaks the same good config (``bad_inputs/control/good.toml``)
in one place and names, in ``# expect: ...`` comment lines at its top, the substrings the error
must contain (the field, or the dataset file and line). Every case is run as ``sweep run CASE``
in a folder of its own, with the provider pointing at a local service on loopback, and must give:
exit code 2, one ``Error: ...`` naming the config file and the expectations, no traceback, no file
written beside the case (no database, no service state), and not one request at the service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sweeper.cli import main

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(CORPUS.glob("*.toml"))
CASE_IDS = [p.stem for p in CASES]
KEY_ENV = "SWEEPER_BAD_INPUT_KEY"
WANDB_ENV = "SWEEPER_BAD_INPUT_WANDB"
ABSENT_ENVS = ("SWEEPER_BAD_INPUT_ABSENT_KEY", "SWEEPER_BAD_INPUT_ABSENT_WANDB")
# a few cases also go through the installed console script, in a subprocess
SUBPROCESS_CASES = [
    "toml_unclosed_string",
    "unknown_hp_learning_rate_multiplier",
    "range_batch_size_65",
    "data_json_line3",
    "missing_api_key_env",
    "storage_sqlite_memory",
    "sampler_options_wrong_type",  # optuna's own logging must stay off the terminal
]


def expectations(case: Path) -> list[str]:
    lines = case.read_text(encoding="utf-8").splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# expect:")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local service for the whole corpus: every case must leave its counters untouched."""
    from sweeper.local.embedded import start_embedded

    with start_embedded(tmp_path_factory.mktemp("svc"), api_key="sk-bad-input-key") as svc:
        yield svc


def stage(case: Path, folder: Path, base_url: str) -> Path:
    """Copy the case and the corpus's datasets into a folder of its own; fill in the URL."""
    folder.mkdir()
    for data in CORPUS.glob("*.jsonl"):
        shutil.copy(data, folder / data.name)
    target = folder / case.name
    target.write_text(case.read_text(encoding="utf-8").replace("@SERVICE_URL@", base_url))
    return target


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, service: Any) -> dict[str, str]:
    """The environment every case runs in: keys set, the variables cases rely on absent."""
    env = {
        KEY_ENV: service.api_key,
        WANDB_ENV: "wandb-bad-input-key",
        "SWEEPER_HOME": str(tmp_path / "home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ABSENT_ENVS:
        monkeypatch.delenv(name, raising=False)
    return env


def run_main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`sweep ARGS` through the console entry point, in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["sweep", *args])
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # what a user would see as a traceback
        pytest.fail(f"{type(exc).__name__} escaped the CLI: {exc}")
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(case: Path, code: int, out: str, err: str) -> None:
    text = out + err
    assert code == 2, f"exit code {code}, output:\n{text}"
    assert "Traceback" not in text
    assert err.startswith("Error: ") and err.count("\n") == 1, f"not one line:\n{err}"
    assert case.name in err, "the message names the config file"
    for expected in expectations(case):
        assert expected in err, f"{expected!r} not in:\n{err}"


def test_corpus_is_large_and_every_case_states_its_expectation():
    """The corpus holds at least 35 cases and each one says what its error must name."""
    assert len(CASES) >= 35
    assert all(expectations(case) for case in CASES), [c.name for c in CASES if not expectations(c)]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_input_is_refused_before_anything_is_spent(
    case, tmp_path, service, cli_env, monkeypatch, capsys
):
    """`sweep run CASE`: exit 2, one message naming the field, nothing written, no request."""
    folder = tmp_path / "case"
    path = stage(case, folder, service.base_url)
    before_files, before_requests = files_under(folder), service.stats()
    code, out, err = run_main(["run", str(path)], monkeypatch, capsys)
    assert_refused(path, code, out, err)
    assert files_under(folder) == before_files, "no database or state written beside the case"
    assert not (tmp_path / "home").exists(), "nothing written under SWEEPER_HOME"
    assert service.stats() == before_requests, "no request reached the service"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_dry_run_refuses_bad_input_too(case, tmp_path, service, cli_env, monkeypatch, capsys):
    """`sweep run --dry-run CASE` exits 2 with the same message and writes nothing."""
    folder = tmp_path / "case"
    path = stage(case, folder, service.base_url)
    before_files, before_requests = files_under(folder), service.stats()
    code, out, err = run_main(["run", "--dry-run", str(path)], monkeypatch, capsys)
    assert_refused(path, code, out, err)
    assert files_under(folder) == before_files
    assert service.stats() == before_requests


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_installed_sweep_command_refuses_bad_input(name, tmp_path, service):
    """The `sweep` console script itself exits 2 with one line on stderr and no traceback."""
    case = CORPUS / f"{name}.toml"
    folder = tmp_path / "case"
    path = stage(case, folder, service.base_url)
    before_files, before_requests = files_under(folder), service.stats()
    env = {k: v for k, v in os.environ.items() if k not in ABSENT_ENVS}
    env.update({KEY_ENV: service.api_key, WANDB_ENV: "w", "SWEEPER_HOME": str(tmp_path / "h")})
    sweep = Path(sys.executable).parent / "sweep"
    proc = subprocess.run(
        [str(sweep), "run", str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_refused(path, proc.returncode, proc.stdout, proc.stderr)
    assert files_under(folder) == before_files
    assert service.stats() == before_requests


def test_the_service_holds_no_file_and_no_job_after_the_corpus(service):
    """Listing the corpus's service through the API client finds no upload and no job."""
    from sweeper.api.client import ApiClient

    with ApiClient(service.base_url, service.api_key) as client:
        assert client.list_files(purpose="fine-tune") == []
        assert list(client.iter_jobs()) == []


def test_control_config_passes_the_same_checks(tmp_path, service, cli_env, monkeypatch, capsys):
    """The unbroken base of the corpus passes --dry-run, so each case fails for its own defect."""
    path = stage(CORPUS / "control" / "good.toml", tmp_path / "case", service.base_url)
    before_requests = service.stats()
    code, out, err = run_main(["run", "--dry-run", str(path)], monkeypatch, capsys)
    assert code == 0, out + err
    assert service.stats() == before_requests  # a dry run spends nothing either


def test_control_config_really_runs_so_the_checks_can_fire(
    tmp_path, local_service, monkeypatch, capsys
):
    """Run for real, the base config writes its database and reaches the service (checks live)."""
    path = stage(CORPUS / "control" / "good.toml", tmp_path / "case", local_service.base_url)
    monkeypatch.setenv(KEY_ENV, local_service.api_key)
    monkeypatch.setenv("SWEEPER_HOME", str(tmp_path / "home"))
    code, out, err = run_main(["run", str(path)], monkeypatch, capsys)
    assert code == 0, out + err
    assert (path.parent / "sweeps.db").exists()
    stats = local_service.stats()
    assert stats.get("POST /v1/files", 0) == 2  # train and valid
    assert stats.get("POST /v1/fine_tuning/jobs", 0) == 2  # n_trials


def test_missing_config_file_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """A config path that does not exist: exit 2, the path named, nothing created."""
    missing = tmp_path / "nope.toml"
    code, out, err = run_main(["run", str(missing)], monkeypatch, capsys)
    assert code == 2
    assert "nope.toml" in err and "no such file" in err
    assert "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []


def test_config_path_that_is_a_directory_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """A folder given as the config: exit 2 with one message, no traceback."""
    code, out, err = run_main(["run", str(tmp_path)], monkeypatch, capsys)
    assert code == 2
    assert str(tmp_path.name) in err
    assert "Traceback" not in out + err
