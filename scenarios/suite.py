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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw_bridge.registry import backend_names
from scenes.schema import ConfigError, Reader, load_toml
from scenes.spec import SCENES_DIR, load_scene
from scenarios.jobs import JOBS, job_backend_problem

AGGREGATES = ("mean", "median", "max", "min", "p95", "proportion")


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

    def extremes(self) -> list[Any]:
        return list(self.args) if self.kind != "integers" else [int(a) for a in self.args]


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

    def limit_text(self) -> str:
        parts = ([f"<= {self.max:g}"] if self.max is not None else []) + \
                ([f">= {self.min:g}"] if self.min is not None else [])
        return " and ".join(parts)


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


def _distribution(value: Any, name: str, errors: list[str]) -> Distribution | None:
    if not isinstance(value, dict) or len(value) != 1:
        errors.append(f"{name}={value!r} must be one of {{uniform = [lo, hi]}}, {{integers = [lo, hi]}}, "
                      f"{{choices = [...]}}")
        return None
    kind, args = next(iter(value.items()))
    if kind == "choices":
        if not isinstance(args, list) or not args:
            errors.append(f"{name}.choices={args!r} must be a non-empty list")
            return None
        return Distribution("choices", tuple(args))
    if kind not in ("uniform", "integers"):
        errors.append(f"{name}: unknown distribution {kind!r}; use uniform, integers or choices")
        return None
    ok_type = int if kind == "integers" else (int, float)
    if (not isinstance(args, list) or len(args) != 2
            or any(isinstance(a, bool) or not isinstance(a, ok_type) or not math.isfinite(a) for a in args)):
        errors.append(f"{name}.{kind}={args!r} must be [lo, hi] ({'integers' if kind == 'integers' else 'numbers'})")
        return None
    if args[0] > args[1]:
        errors.append(f"{name}.{kind}={args!r}: lo exceeds hi")
        return None
    return Distribution(kind, tuple(args))


def suite_from_dict(raw: Any, source: str = "<dict>") -> Suite:
    errors: list[str] = []
    top = Reader(raw, "", errors)
    s = top.sub("suite", required=True)
    name = s.string("name")
    description = s.string("description", default="")
    job = s.string("job", choices=tuple(sorted(JOBS)))
    scene = s.string("scene", default="default")
    backend = s.string("backend", choices=tuple(backend_names()), default="twin")
    seed = s.integer("seed", 0, 2**63 - 1)
    cases = s.integer("cases", 1, 100000)
    s.finish()

    scene_path = Path(scene)
    if scene and not scene_path.is_file():
        scene_path = SCENES_DIR / f"{scene}.toml"
        if not scene_path.is_file():
            errors.append(f"suite.scene={scene!r}: no such file, nor scenes/{scene}.toml")

    params = top.sub("parameters")
    dists: dict[str, dict[str, Distribution]] = {}
    for group in ("scene", "job"):
        g = params.sub(group)
        dists[group] = {}
        for key, value in g.table.items():
            g.used.add(key)
            d = _distribution(value, g.name(f'"{key}"'), errors)
            if d is not None:
                dists[group][key] = d
    params.finish()

    # The scene parameters must name real scene fields with allowed values: try the extremes.
    if scene_path.is_file() and dists["scene"]:
        for i in range(2):
            overrides = {k: d.extremes()[min(i, len(d.extremes()) - 1)] for k, d in dists["scene"].items()}
            try:
                load_scene(scene_path, overrides)
            except ConfigError as exc:
                errors.extend(f"parameters.scene: {e}" for e in exc.errors if e not in errors)
    if job in JOBS and backend and (problem := job_backend_problem(job, backend, "suite.backend")):
        errors.append(problem)
    if job in JOBS:
        allowed = JOBS[job].parameters
        for key in dists["job"]:
            if key not in allowed:
                errors.append(f'parameters.job."{key}" is not a parameter of job {job!r} (known: {sorted(allowed)})')

    metrics: dict[str, MetricSpec] = {}
    mt = top.sub("metrics", required=True)
    for key in list(mt.table):
        m = mt.sub(key)
        agg = m.string("aggregate", choices=AGGREGATES)
        metrics[key] = MetricSpec(key, agg, m.string("description", default=""), m.string("paper", default=""))
        m.finish()
        if job in JOBS and key not in JOBS[job].metrics:
            errors.append(f"metrics.{key}: job {job!r} does not report it (it reports {sorted(JOBS[job].metrics)})")
    if not mt.table:
        errors.append("metrics must name at least one metric")
    mt.finish()

    thresholds = []
    th = top.sub("thresholds")
    for key in list(th.table):
        t = th.sub(key)
        lo = t.number("min", -1e300, 1e300, None)
        hi = t.number("max", -1e300, 1e300, None)
        t.finish()
        if key not in metrics:
            errors.append(f"thresholds.{key}: no such metric in [metrics] (have: {sorted(metrics)})")
        if lo is None and hi is None:
            errors.append(f"thresholds.{key} needs min and/or max")
        thresholds.append(Threshold(key, hi, lo))
    th.finish()
    top.finish()
    if errors:
        raise ConfigError(source, errors)
    return Suite(source, name, description, job, scene_path, backend, seed, cases,
                 dists["scene"], dists["job"], metrics, thresholds)


def load_suite(path: Path | str) -> Suite:
    return suite_from_dict(load_toml(path), str(path))
