"""Fuzzing the config loader: whatever the file holds, only ConfigError comes out.

Three sources of input: arbitrary text and bytes (the TOML parser and file reading), arbitrary
TOML-shaped nested values (the key checks and pydantic), and a valid config with random fields
replaced (the semantic checks, which only run once the shape is right).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeper.api.models import HYPERPARAMETER_RANGES
from sweeper.config import (
    ApiSection,
    BudgetSection,
    Config,
    JobSection,
    ObjectiveSection,
    PruningSection,
    SweepSection,
    WandbConfig,
    load_config,
    parse_config,
)
from sweeper.errors import ConfigError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PATH = Path(tempfile.gettempdir()) / "sweeper-fuzz" / "sweep.toml"  # never read: parse only

# --- what TOML can hold ------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(),
    st.integers(),  # tomllib does not bound integers
    st.floats(),  # nan and inf are TOML too
    st.text(max_size=30),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.sampled_from(
        [
            0,
            1,
            -1,
            8,
            64,
            65,
            8192,
            2**32,
            2**63,
            1e-5,
            0.5,
            1.5,
            "",
            "local",
            "file-abc",
            "http://[::1/v1",
            "http://localhost:1/v1",
            "sqlite:///:memory:?cache=shared",
            "~no_such_user/x",
            "postgresql://h/db",
            "valid_loss",
            "minimize",
            "float",
            "int",
        ]
    ),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=12,
)

GOOD: dict[str, Any] = {
    "sweep": {"name": "fuzz", "storage": "sqlite:///sweeps.db", "n_trials": 3, "seed": 1},
    "api": {"base_url": "https://api.example.com/v1"},
    "job": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "training_file": "train.jsonl",
        "validation_file": "valid.jsonl",
        "hyperparameters": {"lora": True, "n_epochs": 1},
    },
    "search": {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "lora_r": {"type": "categorical", "choices": [8, 16]},
        "batch_size": {"type": "int", "low": 1, "high": 16, "step": 1},
    },
}
SECTIONS = {
    "sweep": SweepSection,
    "api": ApiSection,
    "job": JobSection,
    "pruning": PruningSection,
    "budget": BudgetSection,
    "objective": ObjectiveSection,
}
HP_NAMES = [*HYPERPARAMETER_RANGES, "model", "learning_rate_multiplier"]
SEARCH_KEYS = ["type", "low", "high", "log", "step", "choices"]


def check_only_config_errors(raw: dict[str, Any]) -> Config | None:
    """parse_config either returns a Config or raises ConfigError with at least one problem."""
    try:
        return parse_config(raw, path=PATH)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(exc).startswith(str(PATH))  # every message names the file
        return None


@st.composite
def search_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": draw(st.sampled_from(["float", "int", "categorical", "x"]))}
    for key in draw(st.lists(st.sampled_from(SEARCH_KEYS), max_size=4, unique=True)):
        spec[key] = draw(toml_values)
    return spec


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The good config with a few fields set to random TOML values, at every level."""
    import copy

    raw = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["section", "hyperparameter", "search", "enqueue", "wandb"]))
        if where == "section":
            section = draw(st.sampled_from(sorted(SECTIONS)))
            fields = [f for f in SECTIONS[section].model_fields]
            key = draw(st.sampled_from(fields) | st.text(max_size=8))
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = draw(toml_values)
        elif where == "hyperparameter":
            if not isinstance(raw["job"].get("hyperparameters"), dict):
                raw["job"]["hyperparameters"] = {}  # a section mutation replaced the table
            raw["job"]["hyperparameters"][draw(st.sampled_from(HP_NAMES))] = draw(toml_values)
        elif where == "search":
            raw["search"][draw(st.sampled_from(HP_NAMES))] = draw(search_specs())
        elif where == "enqueue":
            names = st.sampled_from([*raw["search"], "nope"])
            raw["sweep"]["enqueue"] = draw(
                st.lists(st.dictionaries(names, scalars, max_size=3), max_size=2)
            )
        else:
            wandb: dict[str, Any] = {"project": "p"}
            key = draw(st.sampled_from(list(WandbConfig.model_fields)))
            wandb[key] = draw(toml_values)
            raw["job"]["integrations"] = [{"type": "wandb", "wandb": wandb}]
    return raw


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")


def test_the_unmutated_config_is_valid():
    """The base of the mutation fuzzer parses, so mutations start from a config that passes."""
    cfg = check_only_config_errors(GOOD)
    assert cfg is not None and cfg.sweep.name == "fuzz"


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text_gives_only_config_errors(text, folder):
    """Any text in the file: load_config returns a Config or raises ConfigError, nothing else."""
    path = folder / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert "sweep.toml" in str(exc)


toml_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "[sweep]",
                "[api]",
                "[job]",
                "[job.hyperparameters]",
                "[search.lora_r]",
                "[[job.integrations]]",
                "[search]",
                "[pruning]",
                "[budget]",
                'name = "x"',
                'training_file = "t.jsonl"',
                'type = "categorical"',
                "choices = [8, 16]",
                "low = 1",
                "high = inf",
                "n_trials = 2",
                "lora = nan",
                "model = 1979-05-27",
                'storage = "sqlite:///:memory:"',
                'base_url = "http://[::1"',
                "seed = -1",
                "enqueue = [{lora_r = 8}]",
                'wandb = {project = "p"}',
                'x = {a = {b = [1, "c"]}}',
            ]
        ),
        st.text(max_size=20),
    ),
    max_size=25,
)


@FUZZ
@given(lines=toml_lines)
def test_toml_like_text_gives_only_config_errors(lines, folder):
    """Text assembled from TOML-ish lines (deeper into the parser and the checks): same rule."""
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert "sweep.toml" in str(exc)


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_give_only_config_errors(data, folder):
    """A file that may not even be UTF-8: ConfigError naming the file, never UnicodeDecodeError."""
    path = folder / "sweep.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "sweep.toml" in str(exc)


@FUZZ
@given(raw=st.dictionaries(st.text(max_size=12), toml_values, max_size=6))
def test_arbitrary_tables_give_only_config_errors(raw):
    """Any TOML-shaped dict: parse_config raises only ConfigError, each problem a line."""
    check_only_config_errors(raw)


@FUZZ
@given(raw=st.dictionaries(st.sampled_from([*SECTIONS, "search", "x"]), toml_values, max_size=7))
def test_known_sections_with_arbitrary_contents_give_only_config_errors(raw):
    """The real section names holding anything: parse_config raises only ConfigError."""
    check_only_config_errors(raw)


@FUZZ
@given(raw=mutated_configs())
def test_mutated_valid_configs_give_only_config_errors(raw):
    """A valid config with random fields replaced: ConfigError or a Config whose numbers are
    finite and whose fixed hyperparameters lie in the provider's ranges."""
    cfg = check_only_config_errors(raw)
    if cfg is None:
        return
    cfg.fingerprint()  # what a resume compares: must serialise
    for name, value in cfg.job.hyperparameters.items():
        kind, low, high = HYPERPARAMETER_RANGES[name]
        if kind is bool:
            assert isinstance(value, bool)
            continue
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert math.isfinite(value)
        assert low is None or value >= low
        assert high is None or value <= high


@FUZZ
@given(
    name=st.sampled_from(sorted(HYPERPARAMETER_RANGES)),
    value=st.one_of(st.booleans(), st.integers(-10, 200_000), st.floats()),
)
def test_fixed_hyperparameters_pass_only_inside_the_provider_ranges(name, value):
    """A fixed hyperparameter is accepted exactly when its type and value fit the provider's
    documented range; a refusal names job.hyperparameters.<name>."""
    import copy

    raw = copy.deepcopy(GOOD)
    raw["search"].pop(name, None)
    raw["job"]["hyperparameters"][name] = value
    kind, low, high = HYPERPARAMETER_RANGES[name]
    if kind is bool:
        fits = isinstance(value, bool)
    else:
        fits = (
            not isinstance(value, bool)
            and (kind is float or isinstance(value, int))
            and math.isfinite(value)
            and (low is None or value > low or (value == low and name != "max_grad_norm"))
            and (high is None or value <= high)
        )
    try:
        parse_config(raw, path=PATH)
    except ConfigError as exc:
        assert not fits, exc.problems
        assert any(p.startswith(f"job.hyperparameters.{name}:") for p in exc.problems)
    else:
        assert fits


URL_CHARS = "abcxyz019:/?#[]@!$&'()*+,;=%.-_~ \\"
urls = st.builds(
    str.__add__,
    st.sampled_from(
        [
            "",
            "http://",
            "https://",
            "HTTP://",
            "sqlite:///",
            "sqlite://",
            "ftp://",
            "postgresql+psycopg://",
            "mysql://",
            "local",
        ]
    ),
    st.text(alphabet=URL_CHARS, max_size=20),
)


@FUZZ
@given(base_url=urls, storage=urls)
def test_url_like_strings_give_only_config_errors(base_url, storage):
    """Half-broken URLs for api.base_url and sweep.storage (urllib raises on some): ConfigError
    or a Config, and an accepted plain-http base_url is always loopback."""
    import copy

    from sweeper.config import is_loopback

    raw = copy.deepcopy(GOOD)
    raw["api"]["base_url"] = base_url
    raw["sweep"]["storage"] = storage
    cfg = check_only_config_errors(raw)
    if cfg is not None and cfg.api.base_url.lower().startswith("http://"):
        from urllib.parse import urlparse

        assert is_loopback(urlparse(cfg.api.base_url).hostname or "")
