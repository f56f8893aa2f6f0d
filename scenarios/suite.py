"""Scenario suites: TOML files naming a scene, backend, seed, cases, sampled parameters,
metrics and pass thresholds. ``load_suite`` validates every field and reports all errors.

Example (see ``scenarios/twin_smoke.toml``)::

    [suite]
    name = "twin_smoke"
    job = "twin_smoke"         # what each case runs (scenarios/jobs)
    scene = "default"          # a scene name in scenes/ or a path
    backend = "twin"
    seed = 1
    cases = 12

    [parameters.scene]         # scene fields (dotted) sampled per case
    "skull.seed" = { integers = [0, 1000000] }
    "skull.unevenness_amplitude_mm" = { uniform = [0.0, 0.15] }

    [parameters.job]           # the job's own parameters
    offset_x_mm = { uniform = [-4.0, 4.0] }

    [metrics.tip_reprojection_error_px]
    aggregate = "max"          # mean | median | max | min | p95 | proportion (0/1 values, Wilson 95 % CI)
    description = "..."
    paper = "3.18 px"          # optional: the paper's figure, shown beside ours in the report

    [thresholds]
    tip_reprojection_error_px = { max = 0.5 }

    [regression]               # optional: a kept counterexample (``micromill falsify`` writes it)
    property = "tip_reprojection_error_px <= 0.5"
    found = "2026-11-30"
    controller_version = "micromill 0.1.0 (git a9c2f39)"
    found_by = "micromill falsify ..."
    margin = -0.2
    quick = true
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, PlainValidator, Strict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from scenes.fields import FROZEN, Bool, Int, Real, fmt_value, order_validator, resolve
from hw_bridge.registry import backend_names
from scenes.schema import ConfigError, load_toml, problems_of
from scenes.spec import SCENES_DIR, SceneFile, scene_from_dict
from scenarios.jobs import JOBS, job_backend_problem
from scenarios.limits import MAX_CASES

AGGREGATES = ("mean", "median", "max", "min", "p95", "proportion")
#: aggregates each metric kind allows (a proportion of 0/1 values only for binary metrics)
AGGREGATES_BY_KIND = {"binary": AGGREGATES, "count": AGGREGATES[:-1], "continuous": AGGREGATES[:-1]}
#: bounds on what a user can type
MAX_CHOICES = 1000
MAX_PARAMETERS = 200
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Distribution:
    """How one parameter is sampled: ``uniform`` [lo, hi], ``integers`` [lo, hi], or ``choices``."""

    kind: str
    args: tuple

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "uniform":
            return float(rng.uniform(*self.args))
        if self.kind == "integers":
            return int(rng.integers(self.args[0], self.args[1] + 1))
        return self.args[int(rng.integers(len(self.args)))]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    aggregate: str
    description: str
    paper: str = ""          # the paper's figure for this metric, for the report's comparison column


@dataclass(frozen=True)
class Threshold:
    metric: str
    max: float | None
    min: float | None

    def passes(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)


@dataclass(frozen=True)
class Suite:
    source: str
    name: str
    description: str
    job: str
    scene_path: Path
    backend: str
    seed: int
    cases: int
    scene_parameters: dict[str, Distribution]
    job_parameters: dict[str, Distribution]
    metrics: dict[str, MetricSpec]
    thresholds: list[Threshold] = field(default_factory=list)
    #: ``[regression]``: the property this scenario violated and where it came from (None: not a regression)
    regression: "RegressionTable | None" = None


def _distribution(value: Any) -> Distribution:
    """A ``{uniform = [lo, hi]}``, ``{integers = [lo, hi]}`` or ``{choices = [...]}`` table."""
    shapes = "{uniform = [lo, hi]}, {integers = [lo, hi]} or {choices = [...]}"
    if not isinstance(value, dict) or len(value) != 1:
        raise PydanticCustomError("distribution", "must be one of " + shapes)
    kind, args = next(iter(value.items()))
    if kind == "choices":
        if not isinstance(args, list) or not 1 <= len(args) <= MAX_CHOICES:
            raise PydanticCustomError("distribution", f"choices must be a list of 1 to {MAX_CHOICES} values")
        return Distribution("choices", tuple(args))
    if kind not in ("uniform", "integers"):
        raise PydanticCustomError("distribution", f"unknown distribution {fmt_value(kind)}: use " + shapes)
    number = Int if kind == "integers" else Real
    try:
        lo, hi = _PAIR[number].validate_python(args)
    except ValidationError:
        raise PydanticCustomError(
            "distribution", f"{kind} must be [lo, hi] of two " +
            ("integers in [-2**63, 2**63 - 2]" if kind == "integers" else "finite numbers")
            + f", got {fmt_value(args)}") from None
    if lo > hi:
        raise PydanticCustomError("distribution", f"{kind}={fmt_value(args)}: lo exceeds hi")
    return Distribution(kind, tuple(args))


def _pair_adapter(number: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(tuple[number, number])


#: integers [lo, hi] samples rng.integers(lo, hi + 1): int64 bounds
_PAIR = {Int: _pair_adapter(Annotated[Int, Field(ge=-2**63, le=2**63 - 2)]), Real: _pair_adapter(Real)}
Dist = Annotated[Distribution, PlainValidator(_distribution)]
Key = Annotated[str, Strict(), Field(min_length=1, max_length=200)]


def _safe_name(value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise ValueError("must be a plain name: letters, digits, '_', '.', '-', not starting with '.' "
                         "(it names the output folder: no path separators)")
    return value


def _known_job(value: str) -> str:
    if value not in JOBS:
        raise ValueError(f"is not one of {sorted(JOBS)}")
    return value


def _known_backend(value: str) -> str:
    if value not in backend_names():
        raise ValueError(f"is not one of {list(backend_names())}")
    return value


def scene_file_path(scene: str) -> Path:
    """A scene given as a path, else as a name in scenes/."""
    path = Path(scene)
    return path if path.is_file() else SCENES_DIR / f"{scene}.toml"


def _scene_exists(value: str) -> str:
    if not scene_file_path(value).is_file():
        raise ValueError(f"no such file, nor scenes/{value}.toml")
    return value


class SuiteTable(BaseModel):
    """``[suite]``."""

    model_config = FROZEN

    name: Annotated[str, Strict(), Field(min_length=1, max_length=100), AfterValidator(_safe_name)] = Field(
        description="the suite's name (default output folder runs/<name>)")
    description: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="what the suite measures")
    job: Annotated[str, Strict(), AfterValidator(_known_job)] = Field(description="what each case runs "
                                                                                  "(scenarios/jobs)")
    scene: Annotated[str, Strict(), Field(min_length=1, max_length=4096), AfterValidator(_scene_exists)] = Field(
        "default", description="a scene name in scenes/ or a path")
    backend: Annotated[str, Strict(), AfterValidator(_known_backend)] = Field(
        "twin", description="the backend the cases run on (micromill run --backend overrides it)")
    seed: Int = Field(ge=0, le=2**63 - 1, description="seeds every case's sampling")
    cases: Int = Field(ge=1, le=MAX_CASES, description="number of cases")


class ParametersTable(BaseModel):
    """``[parameters]``: sampled scene fields (dotted keys) and job parameters."""

    model_config = FROZEN

    scene: dict[Key, Dist] = Field(default_factory=dict, max_length=MAX_PARAMETERS,
                                   description='scene fields, e.g. "skull.seed" = { integers = [0, 1000000] }')
    job: dict[Key, Dist] = Field(default_factory=dict, max_length=MAX_PARAMETERS,
                                 description="the job's parameters")


class MetricTable(BaseModel):
    model_config = FROZEN

    aggregate: Annotated[str, Strict()] = Field(description="mean | median | max | min | p95 | proportion")
    description: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="what it measures")
    paper: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="the paper's figure")

    @model_validator(mode="before")
    @classmethod
    def _aggregate_known(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("aggregate"), str) and data["aggregate"] not in AGGREGATES:
            raise PydanticCustomError("cross_field", "", {"field": "aggregate", "value": data["aggregate"],
                                                          "allowed": "one of " + ", ".join(map(repr, AGGREGATES))})
        return data


class ThresholdTable(BaseModel):
    model_config = FROZEN

    min: Real | None = Field(None, description="the aggregate must be >= this")
    max: Real | None = Field(None, description="the aggregate must be <= this")

    _ordered = order_validator([("min", "max")])

    @model_validator(mode="after")
    def _one_limit(self) -> "ThresholdTable":
        if self.min is None and self.max is None:
            raise PydanticCustomError("cross_field", "", {"field": "min", "value": None,
                                                          "allowed": "given (min and/or max)"})
        return self


def _iso_date(value: str) -> str:
    import datetime

    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO date, e.g. \"2026-11-30\"") from None
    return value


class RegressionTable(BaseModel):
    """``[regression]``: a kept counterexample (``micromill falsify`` writes it; ``scenarios/regressions/``
    replays it): the property it violated, when, by which controller version and command, and how."""

    model_config = FROZEN

    property: Annotated[str, Strict(), Field(min_length=1, max_length=2000)] = Field(
        description="the property of the job's metrics the case violated (scenarios.properties)")
    found: Annotated[str, Strict(), AfterValidator(_iso_date)] = Field(description="ISO date it was found")
    controller_version: Annotated[str, Strict(), Field(max_length=200)] = Field(
        description="package version and git commit that failed it")
    found_by: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="the command that found it")
    margin: Annotated[float, Strict(), Field(le=0.0)] = Field(
        description="the property's margin on this case (<= 0: violated; -inf: the case errored)")
    quick: Bool = Field(False, description="replays in under about 60 s (CI replays the quick ones)")


class SuiteFile(BaseModel):
    """A suite file."""

    model_config = FROZEN

    suite: SuiteTable
    parameters: ParametersTable = Field(default_factory=ParametersTable)
    metrics: dict[Key, MetricTable] = Field(min_length=1, max_length=MAX_PARAMETERS,
                                            description="the metrics the report aggregates")
    thresholds: dict[Key, ThresholdTable] = Field(default_factory=dict, max_length=MAX_PARAMETERS,
                                                  description="pass limits on aggregated metrics")
    regression: RegressionTable | None = Field(None, description="a kept counterexample's provenance")


# ----- what a sampled range can produce ----------------------------------------------------

def _values(d: Distribution) -> list[Any]:
    """Every value ``d`` can produce, as far as bounds go: the ends of a range, each choice."""
    return list(d.args)


def _corner_values(d: Distribution) -> list[Any]:
    """The values to combine with other fields' for cross-field rules (numeric choices: min, max)."""
    if d.kind != "choices":
        return list(d.args)
    vals = list(d.args)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return sorted({min(vals), max(vals)})
    return vals[:10]


def _kind_problem(where: str, d: Distribution, field_type: Any, field_name: str) -> str | None:
    if d.kind == "uniform" and field_type is not float:
        what = "an integer" if field_type is int else "not a number" if field_type is not None else "unknown"
        return (f"{where}.uniform={fmt_value(list(d.args))}: uniform samples floats, but {field_name} is {what}"
                + (" (use integers)" if field_type is int else " (use choices)"))
    if d.kind == "integers" and field_type is not int:
        return (f"{where}.integers={fmt_value(list(d.args))}: integers samples integers, but {field_name} is "
                + ("a float (use uniform)" if field_type is float else "not an integer (use choices)"))
    return None


def _check_sampled(group: str, dists: dict[str, Distribution], field_type, check_one, errors: list[str]) -> None:
    """Each sampled field on its own (every value it can produce within the field's bounds), then
    the cross-field rules: each pair of sampled fields at the corners of their ranges."""
    if not dists:
        return
    keys = list(dists)
    low = {k: _corner_values(dists[k])[0] for k in keys}
    for key, d in dists.items():
        where = f'parameters.{group}."{key}"'
        if (problem := _kind_problem(where, d, *field_type(key))) is not None:
            errors.append(problem)
            continue
        for i, v in enumerate(_values(d)):     # (the other sampled fields at their low ends)
            for e in check_one({**low, key: v}):
                if key in e:
                    errors.append(f"{where}.{d.kind}[{i}]: {e}")
    if any(e.startswith(f"parameters.{group}.") for e in errors):
        return
    seen: set[str] = set()
    for combo in ([low, {k: _corner_values(dists[k])[-1] for k in keys}] +
                  [{**low, a: va, b: vb} for a, b in itertools.combinations(keys, 2)
                   for va in _corner_values(dists[a]) for vb in _corner_values(dists[b])]):
        for e in check_one(combo):
            if e not in seen:
                seen.add(e)
                at = ", ".join(f"{k}={fmt_value(v)}" for k, v in combo.items())
                errors.append(f"parameters.{group}: when sampled at {at}: {e}")
                break
        if len(seen) >= 5:
            break


def _scene_checker(scene_path: Path):
    from scenes import schema

    try:
        raw = schema.load_toml(scene_path)
    except ConfigError as exc:
        unreadable = exc.errors
        return lambda overrides: unreadable

    def check(overrides: dict[str, Any]) -> list[str]:
        """What loading the scene with ``overrides`` would refuse (the loader itself: the file
        model and the SI re-check of the skull and milling parameters)."""
        try:
            scene_from_dict(raw, str(scene_path), overrides)
        except ConfigError as exc:
            return exc.errors
        return []
    return check


def _scene_field_type(key: str) -> tuple[Any, str]:
    tp, _, _ = resolve(SceneFile, tuple(key.split(".")))
    return tp, key


def _table(raw: Any, *keys: str) -> dict:
    """``raw[k1][k2]...`` when every level is a table, else {}."""
    for k in keys:
        raw = raw.get(k) if isinstance(raw, dict) else None
    return raw if isinstance(raw, dict) else {}


def _valid(adapter_model: type[BaseModel], name: str, value: Any) -> Any:
    """``value`` when it is valid for the field ``name`` of ``adapter_model``, else None."""
    try:
        return adapter_model.__pydantic_validator__.validate_assignment(
            adapter_model.model_construct(), name, value).__dict__[name]
    except (ValidationError, TypeError, ValueError, ArithmeticError):
        return None


def _dists(raw: dict) -> dict[str, Distribution]:
    out = {}
    for k, v in raw.items():
        try:
            if isinstance(k, str) and k:
                out[k] = _distribution(v)
        except (PydanticCustomError, ValidationError):
            pass
    return out


def suite_from_dict(raw: Any, source: str = "<dict>") -> Suite:
    """Validate a parsed suite table (every field, then what each sampled range can produce
    against the scene's and the job's fields) and build the Suite; ``ConfigError`` lists all
    problems at once."""
    errors: list[str] = []
    f = None
    try:
        f = SuiteFile.model_validate(raw)
    except ValidationError as exc:
        errors.extend(problems_of(exc, SuiteFile))
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(source, [f"cannot be read ({type(exc).__name__}: {exc})"]) from None

    # The checks between tables run on whatever parts are valid, so all errors come at once.
    st = _table(raw, "suite")
    job = st.get("job") if isinstance(st.get("job"), str) and st.get("job") in JOBS else None
    backend = _valid(SuiteTable, "backend", st.get("backend", "twin"))
    scene = _valid(SuiteTable, "scene", st.get("scene", "default"))
    if job is not None and backend is not None and \
            (problem := job_backend_problem(job, backend, "suite.backend")) is not None:
        errors.append(problem)

    scene_dists = _dists(_table(raw, "parameters", "scene"))
    unknown = [k for k in scene_dists if _scene_field_type(k)[0] is None]
    for k in unknown:
        errors.append(f'parameters.scene."{k}": the scene has no field {k!r}')
    if scene is not None and scene_dists:
        _check_sampled("scene", {k: d for k, d in scene_dists.items() if k not in unknown},
                       _scene_field_type, _scene_checker(scene_file_path(scene)), errors)

    if job is not None:
        entry = JOBS[job]
        model = entry.params_model
        job_dists = _dists(_table(raw, "parameters", "job"))
        unknown = [k for k in job_dists if k not in model.model_fields]
        for k in unknown:
            errors.append(f'parameters.job."{k}" is not a parameter of job {job!r} '
                          f'(known: {sorted(model.model_fields)})')

        def job_field_type(key: str) -> tuple[Any, str]:
            tp, _, _ = resolve(model, (key,))
            return tp, f"job parameter {key}"

        def check_job(values: dict[str, Any]) -> list[str]:
            try:
                model.model_validate({**entry.parameters, **values})
            except ValidationError as exc:
                return problems_of(exc, model, "parameters.job")
            return []

        _check_sampled("job", {k: d for k, d in job_dists.items() if k not in unknown}, job_field_type,
                       check_job, errors)

        for key, m in _table(raw, "metrics").items():
            agg = m.get("aggregate") if isinstance(m, dict) else None
            if key not in entry.metrics:
                errors.append(f"metrics.{key}: job {job!r} does not report it (it reports {sorted(entry.metrics)})")
            elif agg in AGGREGATES and agg not in AGGREGATES_BY_KIND[entry.metrics[key]]:
                kind = entry.metrics[key]
                errors.append(f"metrics.{key}.aggregate={agg!r}: {key} is a {kind} metric; allowed: "
                              f"{', '.join(AGGREGATES_BY_KIND[kind])} (proportion needs 0/1 values)")
        prop = _table(raw, "regression").get("property")
        if isinstance(prop, str) and prop.strip():
            from scenarios.properties import PropertyError, parse_property

            try:
                parse_property(prop, entry.metrics)
            except PropertyError as exc:
                errors.append(f"regression.property: {exc}")
    metric_names = set(_table(raw, "metrics"))
    for key in _table(raw, "thresholds"):
        if key not in metric_names:
            errors.append(f"thresholds.{key}: no such metric in [metrics] (have: {sorted(metric_names)})")
    if errors or f is None:
        raise ConfigError(source, list(dict.fromkeys(errors)))

    s = f.suite
    metrics = {k: MetricSpec(k, m.aggregate, m.description, m.paper) for k, m in f.metrics.items()}
    thresholds = [Threshold(k, t.max, t.min) for k, t in f.thresholds.items()]
    return Suite(source, s.name, s.description, s.job, scene_file_path(s.scene), s.backend, s.seed, s.cases,
                 dict(f.parameters.scene), dict(f.parameters.job), metrics, thresholds, f.regression)


def with_scene(raw: Any, scene: str | None, source: str) -> Any:
    """The parsed suite ``raw`` with its ``suite.scene`` replaced by ``scene`` (``micromill run
    --scene``; None: unchanged). ConfigError when ``scene`` is no scene file or not a valid scene."""
    if scene is None:
        return raw
    from scenes.spec import load_scene

    if not scene_file_path(scene).is_file():
        raise ConfigError(source, [f"--scene {scene}: no such file, nor scenes/{scene}.toml"])
    load_scene(scene_file_path(scene))            # a scene the loader refuses: ConfigError with every problem
    if isinstance(raw, dict) and isinstance(raw.get("suite"), dict):
        raw = {**raw, "suite": {**raw["suite"], "scene": scene}}
    return raw


def load_suite(path: Path | str, scene: str | None = None) -> Suite:
    """The suite file at ``path``, validated; ``scene`` replaces its ``suite.scene`` (``with_scene``)."""
    return suite_from_dict(with_scene(load_toml(path), scene, str(path)), str(path))
