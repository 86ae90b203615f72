"""Secrets never persist: the provider key and the W&B key reach no output, file, log or error.

A small sweep runs against the local service with distinctive keys (provider key = the service's
bearer token, W&B key through ``[[job.integrations]]``), then every read command runs on it. Each
test looks for the keys' distinctive parts in what a user, a log collector or a backup could see.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sweeper.api.client import ApiClient
from sweeper.cli import main
from sweeper.config import load_config
from sweeper.engine.service import run_sweep
from sweeper.errors import ApiAuthError

MARKER = "SWEEPERTESTSECRET"
PROVIDER_TAIL = secrets.token_hex(12)
WANDB_TAIL = secrets.token_hex(12)
WRONG_TAIL = secrets.token_hex(12)
PROVIDER_KEY = f"sk-{MARKER}-{PROVIDER_TAIL}"
WANDB_KEY = f"wandb-{MARKER}-{WANDB_TAIL}"
WRONG_KEY = f"sk-{MARKER}-WRONG-{WRONG_TAIL}"
# the marker catches a whole key, each random tail catches a key cut or re-prefixed
NEEDLES = (MARKER, PROVIDER_TAIL, WANDB_TAIL, WRONG_TAIL)
KEY_ENV = "SWEEPER_SECRETS_TEST_KEY"
WANDB_ENV = "SWEEPER_SECRETS_TEST_WANDB"
N_TRIALS = 2

CONFIG = """\
[sweep]
name = "secrets"
storage = "sqlite:///sweeps.db"
n_trials = {n_trials}
max_concurrent = 2
sampler = "random"
seed = 1

[api]
base_url = "{base_url}"
api_key_env = "{key_env}"
poll_interval = 0.1

[job]
model = "meta-llama/Llama-3.1-8B-Instruct"
training_file = "{training_file}"
validation_file = "valid.jsonl"
seed = 3

[job.hyperparameters]
lora = true
batch_size = 8
n_epochs = 1

[[job.integrations]]
type = "wandb"
wandb = {{ project = "sweeper-secrets", api_key_env = "{wandb_env}" }}

[search.learning_rate]
type = "float"
low = 1e-4
high = 1e-3
log = true
"""


def leaks(text: str | bytes) -> list[str]:
    """The needles found in text (bytes are searched as bytes: binary files included)."""
    if isinstance(text, bytes):
        return [n for n in NEEDLES if n.encode() in text]
    return [n for n in NEEDLES if n in text]


def write_config(folder: Path, base_url: str, training_file: str = "train.jsonl") -> Path:
    import shutil

    data = Path(__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "tiny_train.jsonl", folder / "train.jsonl")
    shutil.copy(data / "tiny_valid.jsonl", folder / "valid.jsonl")
    path = folder / "sweep.toml"
    path.write_text(
        CONFIG.format(
            n_trials=N_TRIALS,
            base_url=base_url,
            key_env=KEY_ENV,
            wandb_env=WANDB_ENV,
            training_file=training_file,
        )
    )
    return path


def keyed_env(provider_key: str = PROVIDER_KEY) -> dict[str, str]:
    return {KEY_ENV: provider_key, WANDB_ENV: WANDB_KEY}


@dataclass
class Swept:
    config: Path
    service: Any
    state_dir: Path
    run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swept]:
    """A finished sweep, run by the installed `sweep` command with both keys in its env."""
    from sweeper.local.embedded import start_embedded

    root = tmp_path_factory.mktemp("secrets")
    with start_embedded(root / "service", api_key=PROVIDER_KEY) as svc:
        config = write_config(root / "sweep", svc.base_url)
        env = {**os.environ, **keyed_env(), "SWEEPER_HOME": str(root / "home")}
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "sweep"), "run", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Swept(config, svc, root / "service", proc)


def run_main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`sweep ARGS` in-process through the console entry point: (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["sweep", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out + err


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record: the formatted message, its raw args and any exception text."""
    parts = [caplog.text]
    for rec in caplog.records:
        parts += [rec.getMessage(), repr(rec.args), repr(rec.__dict__)]
    return "\n".join(parts)


def test_the_sweep_really_used_both_keys(swept):
    """The fixture's jobs exist and carry the W&B integration (so the checks below mean it)."""
    with ApiClient(swept.service.base_url, PROVIDER_KEY) as client:
        jobs = list(client.iter_jobs())
    assert len(jobs) == N_TRIALS
    assert all(j.status == "succeeded" for j in jobs)
    for job in jobs:
        (integration,) = job.integrations or []
        assert integration["type"] == "wandb"
        assert integration["wandb"]["project"] == "sweeper-secrets"
        assert "api_key" not in integration["wandb"]  # write-only at the service


def test_run_output_holds_no_key(swept):
    """`sweep run`'s stdout and stderr (a subprocess) show neither key."""
    assert leaks(swept.run.stdout) == []
    assert leaks(swept.run.stderr) == []


def test_database_files_hold_no_key(swept):
    """The SQLite database (and its -wal/-shm files) hold neither key, in any table or page."""
    db_files = list(swept.config.parent.glob("sweeps.db*"))
    assert swept.config.parent / "sweeps.db" in db_files
    for path in db_files:
        assert leaks(path.read_bytes()) == [], path


def test_nothing_in_the_sweep_folder_holds_a_key(swept):
    """No file beside the config (databases, caches, anything) holds a key."""
    for path in swept.config.parent.rglob("*"):
        if path.is_file():
            assert leaks(path.read_bytes()) == [], path


def test_service_state_holds_no_key(swept):
    """The local service's state folder stores no key: its bearer token nor the W&B key."""
    files = [p for p in swept.state_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert leaks(path.read_bytes()) == [], path


READ_COMMANDS = [
    ["status"],
    ["compare", "--format", "table"],
    ["compare", "--format", "csv"],
    ["compare", "--format", "json"],
    ["compare", "--format", "markdown"],
    *[["show", "{config}", str(n)] for n in range(N_TRIALS)],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: "-".join(a).replace("{config}-", ""))
def test_read_commands_print_no_key(args, swept, monkeypatch, capsys, caplog):
    """status, compare in every format and show of each trial: exit 0, no key in output or logs."""
    monkeypatch.setenv(KEY_ENV, PROVIDER_KEY)
    monkeypatch.setenv(WANDB_ENV, WANDB_KEY)
    caplog.set_level(logging.DEBUG)
    argv = [a.replace("{config}", str(swept.config)) for a in args]
    if "{config}" not in args:
        argv.insert(1, str(swept.config))
    code, output = run_main(argv, monkeypatch, capsys)
    assert code == 0, output
    assert output.strip()
    assert leaks(output) == []
    assert leaks(log_text(caplog)) == []


def test_html_report_holds_no_key(swept, tmp_path, monkeypatch, capsys, caplog):
    """`sweep report --out` writes a page without either key, and prints none."""
    monkeypatch.setenv(KEY_ENV, PROVIDER_KEY)
    monkeypatch.setenv(WANDB_ENV, WANDB_KEY)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "report.html"
    code, output = run_main(["report", str(swept.config), "--out", str(out)], monkeypatch, capsys)
    assert code == 0, output
    assert leaks(out.read_bytes()) == []
    assert leaks(output) == []
    assert leaks(log_text(caplog)) == []


def test_debug_logs_of_a_run_hold_no_key(tmp_path, monkeypatch, capsys, caplog):
    """Every log record of a whole in-process `sweep run`, at DEBUG, is free of both keys."""
    from sweeper.local.embedded import start_embedded

    caplog.set_level(logging.DEBUG)
    with start_embedded(tmp_path / "service", api_key=PROVIDER_KEY) as svc:
        config = write_config(tmp_path / "sweep", svc.base_url)
        for name, value in keyed_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SWEEPER_HOME", str(tmp_path / "home"))
        code, output = run_main(["run", str(config)], monkeypatch, capsys)
    assert code == 0, output
    assert caplog.records, "DEBUG logging captured nothing: the check would be empty"
    assert leaks(log_text(caplog)) == []
    assert leaks(output) == []


def test_a_wrong_key_is_not_in_the_error(tmp_path, monkeypatch, capsys, caplog):
    """A 401 for a wrong key: exit 1, and neither the CLI message, the exception chain nor the
    logs contain the wrong key (nor the W&B key)."""
    from sweeper.local.embedded import start_embedded

    caplog.set_level(logging.DEBUG)
    with start_embedded(tmp_path / "service", api_key=PROVIDER_KEY) as svc:
        config = write_config(tmp_path / "sweep", svc.base_url)
        env = keyed_env(WRONG_KEY)
        with pytest.raises(ApiAuthError) as err:
            run_sweep(load_config(config), env=env)
        chain = "".join(traceback.format_exception(err.value))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, output = run_main(["run", str(config)], monkeypatch, capsys)
    assert "401" in chain or "key" in chain.lower()
    assert leaks(chain) == []
    assert code == 1, output
    assert "Error: " in output and "401" in output
    assert leaks(output) == []
    assert leaks(log_text(caplog)) == []
    for path in config.parent.glob("sweeps.db*"):
        assert leaks(path.read_bytes()) == []


def test_refused_job_errors_hold_no_key(tmp_path, monkeypatch, capsys):
    """When the provider refuses the create (which carried the W&B key), the stored error and
    `sweep show` of the failed trial hold neither key."""
    from sweeper.local.embedded import start_embedded

    with start_embedded(tmp_path / "service", api_key=PROVIDER_KEY) as svc:
        config = write_config(tmp_path / "sweep", svc.base_url, training_file="file-missing")
        result = run_sweep(load_config(config), env=keyed_env())
    assert result.counts.get("FAIL", 0) >= 1
    for name, value in keyed_env().items():
        monkeypatch.setenv(name, value)
    code, output = run_main(["show", str(config), "0"], monkeypatch, capsys)
    assert code == 0, output
    assert "file-missing" in output  # the refusal's reason is shown...
    assert leaks(output) == []  # ...without a key
    for path in config.parent.glob("sweeps.db*"):
        assert leaks(path.read_bytes()) == []


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("api", f'api_key = "{PROVIDER_KEY}"'),  # the key itself instead of api_key_env
        ("api", f'api_key_env = "{PROVIDER_KEY}"'),  # the key where its variable's name goes
    ],
    ids=["api_key", "api_key_env"],
)
def test_a_key_pasted_into_the_config_is_refused_without_echo(
    section, line, tmp_path, monkeypatch, capsys
):
    """A key written into the TOML is refused (exit 2) and the message does not repeat it."""
    config = write_config(tmp_path / "sweep", "https://api.example.com/v1")
    text = config.read_text().replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    config.write_text(text.replace(f'api_key_env = "{KEY_ENV}"\n', "", 1))
    for name, value in keyed_env().items():
        monkeypatch.setenv(name, value)
    code, output = run_main(["run", str(config)], monkeypatch, capsys)
    assert code == 2, output
    assert "api.api_key" in output
    assert leaks(output) == []
    assert not list(config.parent.glob("sweeps.db*"))
