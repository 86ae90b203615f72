"""The sweep's TOML file -> typed, validated pydantic models.

Everything a user can get wrong is caught here, before anything is spent: unknown keys (with a
did-you-mean), wrong types, hyperparameter names the provider would silently ignore, values and
search ranges outside the provider's documented limits, impossible search spaces, unsupported
storage URLs, plain http to a remote host. Each problem becomes one ``field.path: message`` line
of a :class:`~sweeper.errors.ConfigError` that names the file.

The only I/O is reading the config file itself; datasets are checked by :mod:`sweeper.datasets`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeper.api import is_loopback
from sweeper.api.models import (
    EXCLUSIVE_LOW,
    HYPERPARAMETER_RANGES,
    OPENAI_HYPERPARAMETER_RANGES,
)
from sweeper.errors import ConfigError

LOCAL = "local"
METRICS = ("valid_loss", "train_loss", "trained_tokens", "cost")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "nsga2")
PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")
# $ per 1M trained tokens when the config names none (finetune-api.md section 3)
PRICE_SMALL_MODEL = 0.40
PRICE_LARGE_MODEL = 2.80
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)[bB]\b")


class _Strict(BaseModel):
    # inf/nan pass `ge=`/`gt=` checks but no provider (nor JSON) takes them
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --- search space -----------------------------------------------------------------------------


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[bool | int | float | str] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[Any]) -> list[Any]:
        seen = [repr(c) for c in v]
        if len(set(seen)) != len(seen):
            raise ValueError("choices repeat a value")
        return v


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError("log = true needs low > 0")
    if step is not None:
        if step <= 0:
            raise ValueError("step must be > 0")
        if log and step != 1:
            raise ValueError("step and log = true cannot be combined")


SearchParam = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


# --- sections ---------------------------------------------------------------------------------


class SweepSection(_Strict):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage: str = "sqlite:///sweeps.db"
    n_trials: int = Field(default=10, ge=1, le=100_000)
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    sampler: Literal["tpe", "random", "grid", "cmaes", "qmc", "gp", "nsga2"] = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)  # numpy's seed range
    metric: str | list[str] = "valid_loss"
    direction: str | list[str] = "minimize"
    metric_reduce: Literal["last", "min"] = "last"
    max_retries: int = Field(default=1, ge=0, le=10)
    enqueue: list[dict[str, bool | int | float | str]] = Field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        return [self.direction] if isinstance(self.direction, str) else list(self.direction)


class LocalServiceSection(_Strict):
    """How the embedded local service (base_url = "local") behaves; ignored otherwise."""

    step_delay: float = Field(default=0.0, ge=0, le=60)  # seconds per training step
    max_running: int = Field(default=4, ge=1, le=64)  # jobs training at once; more are queued


class ApiSection(_Strict):
    # which API dialect: Nebius hyperparameters, tags; or OpenAI's (learning_rate_multiplier,
    # metadata instead of tags)
    provider: Literal["nebius", "openai"] = "nebius"
    base_url: str = LOCAL
    api_key_env: str = Field(default="NEBIUS_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    poll_interval: float = Field(default=30.0, gt=0, le=3600)
    request_timeout: float = Field(default=60.0, gt=0, le=3600)
    max_retry_time: float = Field(default=120.0, gt=0, le=3600)  # per request, retries included
    ai_project_id: str | None = None
    local: LocalServiceSection = Field(default_factory=LocalServiceSection)


class WandbConfig(_Strict):
    project: str = Field(min_length=1)
    api_key_env: str = Field(default="WANDB_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = None


class IntegrationConfig(_Strict):
    type: Literal["wandb"]
    wandb: WandbConfig


class JobSection(_Strict):
    model: str | None = Field(default=None, min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = Field(default=None, min_length=1)
    seed: int | None = None
    # values are checked per name by _check_hyperparameters ("lora: must be true or false")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    integrations: list[IntegrationConfig] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class PruningSection(_Strict):
    pruner: Literal["none", "median", "percentile", "hyperband", "successive_halving"] = "none"
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    n_min_trials: int = Field(default=1, ge=1)
    percentile: float = Field(default=25.0, ge=0, le=100)
    min_resource: int = Field(default=1, ge=1)
    max_resource: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


class BudgetSection(_Strict):
    max_trained_tokens: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    price_per_million_tokens: float | None = Field(default=None, ge=0)
    max_failed_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)


class ObjectiveSection(_Strict):
    evaluator: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Config(_Strict):
    sweep: SweepSection
    api: ApiSection = Field(default_factory=ApiSection)
    job: JobSection
    search: dict[str, SearchParam] = Field(default_factory=dict)
    pruning: PruningSection = Field(default_factory=PruningSection)
    budget: BudgetSection = Field(default_factory=BudgetSection)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)

    # set by load_config, not by the file
    path: Path = Path("sweep.toml")
    source_text: str = ""

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def is_local(self) -> bool:
        return self.api.base_url == LOCAL

    @property
    def price_per_million_tokens(self) -> float:
        if self.budget.price_per_million_tokens is not None:
            return self.budget.price_per_million_tokens
        return default_price(self.job.model or "")

    def resolve(self, value: str) -> Path:
        """A path from the file, relative to the config's folder."""
        p = Path(value)
        # "~someone/..." for a user that does not exist: leave it as is (then "no such file")
        with contextlib.suppress(RuntimeError):
            p = p.expanduser()
        return p if p.is_absolute() else (self.folder / p)

    def is_file_id(self, value: str) -> bool:
        """`file-...` that is not a local path names an already uploaded file."""
        return value.startswith("file-") and not self.resolve(value).exists()

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file the storage URL names (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
        url = self.sweep.storage
        if not url.startswith("sqlite:///"):
            return None
        return Path(url[len("sqlite:///") :].split("?", 1)[0])

    @property
    def storage_url(self) -> str:
        """The storage URL with a relative SQLite path resolved against the config's folder."""
        db = self.sqlite_path
        if db is not None and not db.is_absolute():
            return "sqlite:///" + str((self.folder / db).resolve())
        return self.sweep.storage

    def fingerprint(self) -> dict[str, Any]:
        """What a resume may not change without --allow-config-change."""
        return {
            "search": {k: v.model_dump() for k, v in sorted(self.search.items())},
            "job": self.job.model_dump(mode="json"),
            "metric": self.sweep.metrics,
            "direction": self.sweep.directions,
            "metric_reduce": self.sweep.metric_reduce,
            "sampler": self.sweep.sampler,
            "seed": self.sweep.seed,
            "provider": self.api.provider,
        }


def default_price(model: str) -> float:
    """$0.40 per 1M tokens under 20B parameters, $2.80 above (finetune-api.md section 3)."""
    sizes = [float(m) for m in _SIZE_RE.findall(model)]
    return PRICE_LARGE_MODEL if sizes and max(sizes) > 20 else PRICE_SMALL_MODEL


# --- loading ----------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a sweep config. Raises ConfigError naming the file."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=source) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from exc
    return parse_config(raw, path=p.resolve(), source_text=text, source=source)


def parse_config(
    raw: dict[str, Any], *, path: Path, source_text: str = "", source: str | None = None
) -> Config:
    source = source or str(path)
    problems = _unknown_keys(raw)
    if problems:
        raise ConfigError(problems, source=source)
    try:
        cfg = Config.model_validate({**raw, "path": path, "source_text": source_text})
    except ValidationError as exc:
        raise ConfigError(_render_validation(exc), source=source) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems, source=source)
    return cfg


_UNION_MEMBER = re.compile(r"^(bool|int|float|str|(list|dict|literal)\[.*\])$")
_VALID_KIND = re.compile(r"^Input should be a valid (\w+)")


def _render_validation(exc: ValidationError) -> list[str]:
    return _merge_union_errors(_render_errors(exc))


def _render_errors(exc: ValidationError) -> list[tuple[str, str, bool]]:
    """(field path, message, whether the path went through a union member)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(x) for x in err["loc"]]
        # drop the discriminator tag pydantic adds to union locations ("search.lr.float.low")
        if len(loc) >= 3 and loc[0] == "search" and loc[2] in ("float", "int", "categorical"):
            del loc[2]
        # a plain union ("metric: str | list[str]") tries each member and reports each under its
        # own tag ("sweep.metric.str", "sweep.metric.list[str].0"): cut the path at the tag
        member = False
        for i in range(len(loc) - 1, 1, -1):
            if _UNION_MEMBER.match(loc[i]):
                del loc[i:]
                member = err["type"].endswith("_type")
                break
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            msg = "type must be one of float, int, categorical"
        elif err["type"] == "union_tag_not_found":
            msg = "needs a `type` (float, int or categorical)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append((".".join(loc) or "(top level)", msg, member))
    return lines


def _merge_union_errors(errors: list[tuple[str, str, bool]]) -> list[str]:
    """One line per field: a union's "wrong type" errors become one "must be a X or Y"."""
    by_field: dict[str, list[tuple[str, bool]]] = {}
    for where, msg, member in errors:
        by_field.setdefault(where, []).append((msg, member))
    lines = []
    for where, found in by_field.items():
        specific = [m for m, member in found if not member]
        if specific:  # a member accepted the type but not the value: that is the problem
            lines += [f"{where}: {m}" for m in dict.fromkeys(specific)]
            continue
        kinds = [k.group(1) for m, _ in found if (k := _VALID_KIND.match(m))]
        if len(kinds) == len(found) and len(kinds) > 1:
            kinds = list(dict.fromkeys(kinds))
            lines.append(f"{where}: must be a {', '.join(kinds[:-1])} or {kinds[-1]}")
        else:
            lines += [f"{where}: {m}" for m in dict.fromkeys(m for m, _ in found)]
    return lines


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown_keys(raw: dict[str, Any]) -> list[str]:
    """Unknown keys at any known level, with a did-you-mean (pydantic's message has none)."""
    problems: list[str] = []

    def check(data: Any, model: type[BaseModel], where: str) -> None:
        if not isinstance(data, dict):
            return
        fields = [f for f in model.model_fields if f not in ("path", "source_text")]
        for key, value in data.items():
            loc = f"{where}.{key}" if where else key
            if key not in model.model_fields or key in ("path", "source_text"):
                problems.append(f"{loc}: unknown key{_did_you_mean(key, fields)}")
                continue
            sub = _SECTION_MODELS.get((model, key))
            if sub is not None:
                if isinstance(value, list):
                    for i, item in enumerate(value):
                        check(item, sub, f"{loc}[{i}]")
                else:
                    check(value, sub, loc)

    check(raw, Config, "")
    search = raw.get("search")
    if isinstance(search, dict):
        for name, spec in search.items():
            if not isinstance(spec, dict):
                continue
            kind = spec.get("type")
            model = _PARAM_MODELS.get(kind if isinstance(kind, str) else "")
            if model is not None:
                check(spec, model, f"search.{name}")
    return problems


_PARAM_MODELS: dict[str, type[BaseModel]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}

_SECTION_MODELS: dict[tuple[type[BaseModel], str], type[BaseModel]] = {
    (Config, "sweep"): SweepSection,
    (Config, "api"): ApiSection,
    (ApiSection, "local"): LocalServiceSection,
    (Config, "job"): JobSection,
    (Config, "pruning"): PruningSection,
    (Config, "budget"): BudgetSection,
    (Config, "objective"): ObjectiveSection,
    (JobSection, "integrations"): IntegrationConfig,
    (IntegrationConfig, "wandb"): WandbConfig,
}


def _semantic_problems(cfg: Config) -> list[str]:
    problems: list[str] = []
    problems += _check_storage(cfg.sweep.storage)
    problems += _check_base_url(cfg.api.base_url)
    problems += _check_objective(cfg)
    problems += _check_hyperparameters(cfg)
    problems += _check_search(cfg)
    if (
        "valid_loss" in cfg.sweep.metrics
        and not cfg.job.validation_file
        and cfg.objective.evaluator is None
    ):
        problems.append(
            "sweep.metric: valid_loss needs a job.validation_file "
            "(or use train_loss, or an [objective] evaluator)"
        )
    if cfg.job.model is None and "model" not in cfg.search:
        problems.append("job.model: required key is missing (or search it under [search.model])")
    if cfg.job.model is not None and "model" in cfg.search:
        problems.append("job.model: also searched in [search.model]; keep one")
    if cfg.pruning.pruner != "none" and len(cfg.sweep.metrics) > 1:
        problems.append(
            'pruning.pruner: Optuna cannot prune a multi-objective sweep (use pruner = "none")'
        )
    p = cfg.pruning
    if isinstance(p.max_resource, int) and p.max_resource < p.min_resource:
        problems.append(
            f"pruning.max_resource: {p.max_resource} is below min_resource ({p.min_resource})"
        )
    if cfg.sweep.sampler == "grid":
        for name, spec in cfg.search.items():
            if isinstance(spec, FloatParam) and spec.step is None:
                problems.append(
                    f"search.{name}: the grid sampler needs categorical choices or a step"
                )
    if cfg.sweep.sampler == "cmaes" and len(cfg.sweep.metrics) > 1:
        problems.append("sweep.sampler: cmaes cannot optimize several metrics (use nsga2 or tpe)")
    if cfg.sweep.sampler == "nsga2" and len(cfg.sweep.metrics) == 1:
        pass  # allowed: NSGA-II works for one objective too
    if not cfg.search and not cfg.sweep.enqueue:
        problems.append("search: no hyperparameter is searched (add a [search.<name>] table)")
    if cfg.budget.max_cost is not None and cfg.price_per_million_tokens == 0:
        problems.append("budget.max_cost: needs a price_per_million_tokens above 0")
    for i, point in enumerate(cfg.sweep.enqueue):
        for key, value in point.items():
            if key not in cfg.search:
                problems.append(
                    f"sweep.enqueue[{i}].{key}: not a searched parameter"
                    f"{_did_you_mean(key, list(cfg.search))}"
                )
            else:
                problems += _check_value_in_space(
                    f"sweep.enqueue[{i}].{key}", cfg.search[key], value
                )
    return problems


def _check_storage(url: str) -> list[str]:
    if url.startswith("sqlite"):
        file = url[len("sqlite:///") :].split("?", 1)[0]
        in_memory = file in ("", ":memory:") or "mode=memory" in url
        if not url.startswith("sqlite:///") or in_memory:
            return [
                f"sweep.storage: '{url}' must name a SQLite file, e.g. sqlite:///sweeps.db "
                "(a sweep must survive the process to resume)"
            ]
        return []
    if re.match(r"^postgresql(\+psycopg|\+psycopg2)?://", url):
        return []
    scheme = url.split(":", 1)[0] if ":" in url else url
    return [
        f"sweep.storage: unsupported storage '{scheme}' "
        "(use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB)"
    ]


def _check_base_url(url: str) -> list[str]:
    if url == LOCAL:
        return []
    try:
        parsed = urlparse(url)
        hostname = parsed.hostname
    except ValueError:  # e.g. "http://[::1/v1": an unclosed IPv6 bracket
        hostname = None
    if hostname is None or parsed.scheme not in ("http", "https"):
        return [f"api.base_url: '{url}' is not an http(s) URL nor \"local\""]
    if parsed.scheme == "http" and not is_loopback(hostname):
        return [
            f"api.base_url: refusing to send the API key over plain http to {hostname} "
            "(use https, or a loopback address)"
        ]
    return []


def _check_objective(cfg: Config) -> list[str]:
    problems = []
    metrics, directions = cfg.sweep.metrics, cfg.sweep.directions
    if not metrics:
        problems.append("sweep.metric: names no metric")
    for m in metrics:
        if m not in METRICS and cfg.objective.evaluator is None:
            problems.append(
                f"sweep.metric: unknown metric '{m}' (one of {', '.join(METRICS)}, "
                f"or any name with an [objective] evaluator){_did_you_mean(m, list(METRICS))}"
            )
    if len(set(metrics)) != len(metrics):
        problems.append("sweep.metric: a metric is listed twice")
    for d in directions:
        if d not in ("minimize", "maximize"):
            problems.append(f"sweep.direction: '{d}' must be minimize or maximize")
    if len(directions) != len(metrics):
        problems.append(
            f"sweep.direction: {len(directions)} direction(s) for {len(metrics)} metric(s)"
        )
    return problems


def hyperparameter_ranges(cfg: Config) -> dict[str, tuple[type, float | None, float | None]]:
    """The documented hyperparameters of the configured provider: name -> (type, low, high)."""
    if cfg.api.provider == "openai":
        return OPENAI_HYPERPARAMETER_RANGES
    return HYPERPARAMETER_RANGES


def _check_hyperparameters(cfg: Config) -> list[str]:
    problems = []
    ranges = hyperparameter_ranges(cfg)
    for name, value in cfg.job.hyperparameters.items():
        where = f"job.hyperparameters.{name}"
        if name not in ranges:
            problems.append(
                f"{where}: unknown hyperparameter, the provider ({cfg.api.provider}) would "
                f"silently ignore it{_did_you_mean(name, list(ranges))}"
            )
            continue
        if name in cfg.search:
            problems.append(f"{where}: also searched in [search.{name}]; keep one")
        problems += _check_hp_value(where, value, ranges[name], name in EXCLUSIVE_LOW)
    return problems


def _check_hp_value(
    where: str,
    value: Any,
    limits: tuple[type, float | None, float | None],
    exclusive_low: bool,
) -> list[str]:
    kind, low, high = limits
    if kind is bool:
        return [] if isinstance(value, bool) else [f"{where}: must be true or false"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{where}: must be a number"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: must be a finite number"]
    if kind is int and not isinstance(value, int):
        return [f"{where}: must be a whole number, got {value}"]
    too_low = low is not None and (value <= low if exclusive_low else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        return [
            f"{where}: {value} is outside the provider's range "
            f"{_range_text(low, high, exclusive_low)}"
        ]
    return []


def _range_text(low: float | None, high: float | None, exclusive_low: bool) -> str:
    if high is None:
        return ("> " if exclusive_low else ">= ") + f"{low:g}" if low is not None else ""
    return f"{low:g}..{high:g}"


def _check_search(cfg: Config) -> list[str]:
    problems = []
    ranges = hyperparameter_ranges(cfg)
    for name, spec in cfg.search.items():
        where = f"search.{name}"
        if name == "model":
            if not isinstance(spec, CategoricalParam) or not all(
                isinstance(c, str) for c in spec.choices
            ):
                problems.append(f"{where}: model is searched as categorical choices of names")
            continue
        if name not in ranges:
            problems.append(
                f"{where}: unknown hyperparameter, the provider ({cfg.api.provider}) would "
                f"silently ignore it{_did_you_mean(name, [*ranges, 'model'])}"
            )
            continue
        limits, exclusive = ranges[name], name in EXCLUSIVE_LOW
        kind = limits[0]
        if isinstance(spec, CategoricalParam):
            for i, choice in enumerate(spec.choices):
                problems += _check_hp_value(f"{where}.choices[{i}]", choice, limits, exclusive)
        elif kind is bool:
            problems.append(f"{where}: {name} is true/false; search it as categorical")
        elif kind is int and isinstance(spec, FloatParam):
            problems.append(f'{where}: {name} is a whole number; use type = "int"')
        else:
            for bound in ("low", "high"):
                value = getattr(spec, bound)
                problems += _check_hp_value(f"{where}.{bound}", value, limits, exclusive)
    return problems


def _check_value_in_space(where: str, spec: Any, value: Any) -> list[str]:
    if isinstance(spec, CategoricalParam):
        # `True in [1, 16]` holds in Python; a bool only matches a bool choice
        same = [c for c in spec.choices if isinstance(c, bool) == isinstance(value, bool)]
        return [] if value in same else [f"{where}: {value!r} is not among the choices"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{where}: must be a number"]
    if not spec.low <= value <= spec.high:
        return [f"{where}: {value} is outside [{spec.low}, {spec.high}]"]
    if isinstance(spec, IntParam) and value != int(value):
        return [f'{where}: {value} is not a whole number (the search is type = "int")']
    if spec.step is not None and not _on_step(value, spec.low, spec.step):
        return [f"{where}: {value} is not on the search's step ({spec.low} + k * {spec.step})"]
    return []


def _on_step(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return math.isclose(k, round(k), abs_tol=1e-9)
