"""One-at-a-time sensitivity of a suite's outcome to the uncertain parameters of the twin.

    micromill sensitivity SPEC.toml [--cases N] [--workers N] [--out DIR] [--resume] [--report-only]

A spec (``scenarios/sensitivity.toml``) names a base suite, the cases per level and, for each
uncertain parameter, the levels spanning its plausible range::

    [sensitivity]
    name = "bone_model_sensitivity"
    suite = "milling_oracle.toml"        # relative to this file, or a path
    cases = 8                            # per level; the same case seeds at every level
    metrics = ["success", "breached", "max_bridge_um", "milling_time_min"]

    [scene."milling.cut_rate_um_s"]      # a scene field (dotted, file units), as in a suite
    levels = [150.0, 300.0, 600.0, 1200.0]
    note = "why this range"

    [job.oracle_mae]                     # a parameter of the suite's job
    levels = [0.0, 0.1, 0.2432]

    [fixed.job]                          # optional: held in every run, the sweep's baseline (a swept
    oracle_mae = 0.0                     # field's levels replace it in its own runs; it is its default)

For each parameter and level the base suite runs with that one field fixed at the level and every
other field drawn as the base suite draws it (``scenarios.runner.run_suite``; one run folder per
level, ``OUT/<group>.<key>/level<i>/``, beside the suite file it ran, ``level<i>.toml``).
**Common random numbers**: every level's cases get the same case seeds and the same values of all
other fields as the base suite's cases, so a difference between levels is the parameter's effect,
not another draw of skulls. The fixed field keeps the base suite's random stream unchanged: a
field the base draws ``uniform`` (``integers``) is fixed as ``uniform = [L, L]`` (``integers =
[L, L]``; one draw, value L), one drawn from k choices as k copies of L, one the base does not sample is appended as
``choices = [L]`` (no draw); loading the spec checks this on the first cases and refuses a
parameter whose fixing would change the other draws.

Outputs in OUT: ``sensitivity.json`` (per parameter, per level: each metric's aggregate as the base
suite defines it; proportions with successes k of n and the Wilson 95 % interval), ``sensitivity.png``
(one row per parameter, one column per metric, the default level marked) and ``sensitivity.md``
(the same as tables). ``--report-only`` rebuilds them from the run folders as they stand.
"""
from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, PlainValidator, Strict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from scenarios.cases import CaseResult, make_cases
from scenarios.jobs import JOBS
from scenarios.limits import MAX_CASES
from scenarios.runner import CASE_LOG, RUN_PLAN, RunFolderError, RunPlan, read_case_log, run_suite, summarize
from scenarios.suite import Key, Suite, _safe_name, _scene_field_type, suite_from_dict
from scenes.fields import FROZEN, Int, _fields_of, fmt_value, resolve
from scenes.schema import ConfigError, load_toml, problems_of
from scenes.spec import SceneFile

#: bounds on what a spec can ask for
MAX_LEVELS = 12
MAX_SWEPT = 20
MAX_METRICS = 8
#: cases of a whole sweep (parameters x levels x cases per level)
MAX_TOTAL_CASES = MAX_CASES
DEFAULT_METRICS = ("success", "breached", "max_bridge_um", "milling_time_min")
GROUPS = ("scene", "job")
RESULTS_JSON, PLOT, SUMMARY_MD = "sensitivity.json", "sensitivity.png", "sensitivity.md"



def _level(value: Any) -> Any:
    """A level: a bool, an integer, a finite number or a short string (checked against its field later)."""
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)) or \
            (isinstance(value, str) and 1 <= len(value) <= 200):
        return value
    raise PydanticCustomError("level", "must be a bool, an integer, a finite number or a string of 1-200 characters")


Level = Annotated[bool | int | float | str, PlainValidator(_level)]


class SensitivityTable(BaseModel):
    """``[sensitivity]``."""

    model_config = FROZEN

    name: Annotated[str, Strict(), Field(min_length=1, max_length=100), AfterValidator(_safe_name)] = Field(
        description="the sweep's name (default output folder runs/<name>)")
    description: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="what the sweep asks")
    suite: Annotated[str, Strict(), Field(min_length=1, max_length=4096)] = Field(
        description="the base suite file, relative to the spec's folder or a path")
    cases: Int = Field(ge=1, le=MAX_CASES, description="cases per level (the same case seeds at every level)")
    metrics: list[Annotated[str, Strict(), Field(min_length=1, max_length=200)]] = Field(
        list(DEFAULT_METRICS), min_length=1, max_length=MAX_METRICS,
        description="metrics of the base suite to tabulate and plot, one plot column each")


class LevelsTable(BaseModel):
    """``[scene."<dotted field>"]`` or ``[job.<parameter>]``."""

    model_config = FROZEN

    levels: list[Level] = Field(min_length=2, max_length=MAX_LEVELS,
                                description="values to run, in the field's file units (bools, numbers or strings)")
    default: Level | None = Field(None, description="the level to mark as the default (default: the value the "
                                                    "base suite gives the field when it does not vary it)")
    note: Annotated[str, Strict(), Field(max_length=10000)] = Field("", description="where the range comes from")

    @model_validator(mode="after")
    def _distinct(self) -> "LevelsTable":
        if len(set(map(repr, self.levels))) != len(self.levels):
            raise PydanticCustomError("cross_field", "{field}={value} must be {allowed}",
                                      {"field": "levels", "value": fmt_value(list(self.levels)),
                                       "allowed": "distinct values"})
        return self


class FixedTable(BaseModel):
    """``[fixed]``: fields held at one value in every run of the sweep: the sweep's baseline (a swept
    field's own levels replace its fixed value in its runs, and the fixed value is its default)."""

    model_config = FROZEN

    scene: dict[Key, Level] = Field(default_factory=dict, max_length=MAX_SWEPT,
                                    description='scene fields, e.g. "milling.hardness_max" = 1.4 (file units)')
    job: dict[Key, Level] = Field(default_factory=dict, max_length=MAX_SWEPT,
                                  description="parameters of the base suite's job, e.g. oracle_mae = 0.0")


class SensitivityFile(BaseModel):
    """A sensitivity spec."""

    model_config = FROZEN

    sensitivity: SensitivityTable
    scene: dict[Key, LevelsTable] = Field(default_factory=dict, max_length=MAX_SWEPT,
                                          description="swept scene fields (dotted paths, file units)")
    job: dict[Key, LevelsTable] = Field(default_factory=dict, max_length=MAX_SWEPT,
                                        description="swept parameters of the base suite's job")
    fixed: FixedTable = Field(default_factory=FixedTable, description="fields held fixed in every run")


@dataclass(frozen=True)
class SweptLevel:
    """One level of one parameter: its value, the suite it runs (``raw``: the base suite's table with
    the field fixed) and where (``folder`` relative to the sweep's output folder)."""

    value: Any
    raw: dict
    folder: str


@dataclass(frozen=True)
class SweptParameter:
    group: str            # "scene" | "job"
    key: str              # dotted scene field (file units) or job parameter
    levels: tuple[SweptLevel, ...]
    default: Any          # the level to mark (None: the base suite varies the field and no default was given)
    note: str

    @property
    def label(self) -> str:
        return f"{self.group}.{self.key}"


@dataclass(frozen=True)
class Sensitivity:
    source: str
    name: str
    description: str
    base: Suite
    cases: int
    metrics: tuple[str, ...]
    parameters: tuple[SweptParameter, ...]


# ----- the level suites ------------------------------------------------------------------------

def fixed_distribution(base: dict | None, value: Any) -> dict:
    """The distribution table that fixes a field at ``value`` while consuming the same random draws
    as the base suite's ``base`` table (None: the base does not sample it; no draw)."""
    if base is None:
        return {"choices": [value]}
    kind, args = next(iter(base.items()))
    if kind == "uniform":
        return {"uniform": [value, value]}
    if kind == "choices":
        return {"choices": [value] * len(args)}
    return {"integers": [value, value]}   # samples rng.integers(L, L + 1): one draw, like [lo, hi]


def level_suite_raw(base_raw: dict, group: str, key: str, value: Any, name: str) -> dict:
    """The base suite's table with ``parameters.<group>.<key>`` fixed at ``value`` and the name ``name``."""
    raw = copy.deepcopy(base_raw)
    raw["suite"]["name"] = name
    params = raw.setdefault("parameters", {}).setdefault(group, {})
    params[key] = fixed_distribution(params.get(key), value)
    return raw


def _crn_problem(base: Suite, level: Suite, group: str, key: str, cases: int) -> str | None:
    """Why the level's cases would not share the base's case seeds and other fields' values, or None."""
    for b, lv in zip(make_cases(base, cases, base.seed, Path(".")), make_cases(level, cases, base.seed, Path("."))):
        others_b = ({k: v for k, v in b.scene_overrides.items() if not (group == "scene" and k == key)},
                    {k: v for k, v in b.job_parameters.items() if not (group == "job" and k == key)})
        others_l = ({k: v for k, v in lv.scene_overrides.items() if not (group == "scene" and k == key)},
                    {k: v for k, v in lv.job_parameters.items() if not (group == "job" and k == key)})
        if b.seed != lv.seed or others_b != others_l:
            return (f"fixing it changes the other fields' draws from case {b.index} on (the base suite draws it "
                    f"as {base.scene_parameters.get(key) if group == 'scene' else base.job_parameters.get(key)}); "
                    f"common random numbers need a field the base draws as uniform or choices, or not at all")
    return None


def _default_value(base: Suite, base_raw: dict, group: str, key: str) -> Any:
    """The value the base suite gives ``key`` when it does not vary it: its one choice, else the
    scene file's value, else the field's default; None when the base suite varies it."""
    dists = base.scene_parameters if group == "scene" else base.job_parameters
    if key in dists:
        d = dists[key]
        return d.args[0] if len(set(map(repr, d.args))) == 1 else None     # one choice, or [L, L]
    if group == "job":
        return JOBS[base.job].parameters.get(key)
    node: Any = load_toml(base.scene_path)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        return node
    _, _, info = resolve(SceneFile, tuple(key.split(".")))
    return None if info is None or info.is_required() else info.get_default(call_default_factory=True)


def _unknown_key(base: Suite, group: str, key: str) -> str | None:
    """Why ``key`` names no scene field / job parameter, or None."""
    where = f'{group}."{key}"'
    if group == "scene":
        if _scene_field_type(key)[0] is not None:
            return None
        section = key.split(".")[0]
        info = SceneFile.model_fields.get(section)
        fields = sorted(_fields_of(info.annotation) or {}) if info is not None else []
        return (f"{where}: the scene has no field {key!r}"
                + (f" (fields of [{section}]: {', '.join(fields)})" if fields else ""))
    model = JOBS[base.job].params_model
    if key in model.model_fields:
        return None
    return f"{where}: job {base.job!r} has no parameter {key!r} (known: {sorted(model.model_fields)})"


def sensitivity_from_dict(raw: Any, source: str, folder: Path) -> Sensitivity:
    """Validate a parsed spec (``folder``: where relative suite paths start) against its base suite:
    every field, every level (the level suite is loaded like any suite, so the scene's bounds and
    cross-field rules apply), common random numbers; ``ConfigError`` lists all problems at once."""
    try:
        spec = SensitivityFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, problems_of(exc, SensitivityFile)) from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(source, [f"cannot be read ({type(exc).__name__}: {exc})"]) from None
    s = spec.sensitivity
    path = Path(s.suite) if Path(s.suite).is_absolute() else folder / s.suite
    if not path.is_file():
        raise ConfigError(source, [f"sensitivity.suite={s.suite!r}: no such file ({path})"])
    try:
        base_raw = load_toml(path)
        suite_from_dict(base_raw, str(path))
    except ConfigError as exc:
        raise ConfigError(source, [f"sensitivity.suite={s.suite!r}: {e}" for e in exc.errors]) from None
    fixed = [(g, k, v) for g in GROUPS for k, v in getattr(spec.fixed, g).items()]
    for group, key, value in fixed:
        base_raw = level_suite_raw(base_raw, group, key, value, base_raw["suite"]["name"])
    try:
        base = suite_from_dict(base_raw, f"{path} with [fixed] of {source}")
    except ConfigError as exc:
        raise ConfigError(source, [f"fixed: {e}" for e in exc.errors]) from None

    errors: list[str] = []
    swept = [(g, k, t) for g in GROUPS for k, t in getattr(spec, g).items()]
    if not swept:
        errors.append("scene / job: no parameter to sweep (add e.g. [scene.\"milling.cut_rate_um_s\"] levels = [...])")
    if len(swept) > MAX_SWEPT:
        errors.append(f"scene / job: {len(swept)} parameters; at most {MAX_SWEPT}")
    total = sum(len(t.levels) for _, _, t in swept) * s.cases
    if total > MAX_TOTAL_CASES:
        errors.append(f"sensitivity.cases={s.cases}: {total} cases in all (levels x cases); at most {MAX_TOTAL_CASES}")
    for m in s.metrics:
        if m not in base.metrics:
            errors.append(f"sensitivity.metrics: {m!r} is not a metric of the base suite (it has {sorted(base.metrics)})")

    parameters = []
    for group, key, table in swept:
        if (problem := _unknown_key(base, group, key)) is not None:
            errors.append(problem)
            continue
        levels = []
        for i, value in enumerate(table.levels):
            where = f'{group}."{key}".levels[{i}]={fmt_value(value)}'
            raw_level = level_suite_raw(base_raw, group, key, value, f"{s.name}.{group}.{key}.level{i}"[:100])
            try:
                level = suite_from_dict(raw_level, f"{source} ({where})")
            except ConfigError as exc:
                errors.extend(f"{where}: {e}" for e in exc.errors)
                continue
            if i == 0 and (problem := _crn_problem(base, level, group, key, min(s.cases, 50))) is not None:
                errors.append(f'{group}."{key}": {problem}')
            levels.append(SweptLevel(value, raw_level, f"{group}.{key}/level{i}"))
        default = table.default if table.default is not None else _default_value(base, base_raw, group, key)
        parameters.append(SweptParameter(group, key, tuple(levels), default, table.note))
    if errors:
        raise ConfigError(source, list(dict.fromkeys(errors)))
    return Sensitivity(source, s.name, s.description, base, s.cases, tuple(s.metrics), tuple(parameters))


def load_sensitivity(path: Path | str) -> Sensitivity:
    path = Path(path)
    return sensitivity_from_dict(load_toml(path), str(path), path.parent)


# ----- TOML for the level suites ----------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, int) or math.isfinite(v) else ("nan" if math.isnan(v) else
                                                                       ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(raw: dict, _path: tuple[str, ...] = ()) -> str:
    """A parsed TOML table (tables, strings, numbers, bools, lists of those) as TOML text;
    ``tomllib.loads(to_toml(raw)) == raw``."""
    lines = []
    scalars = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    if _path and (scalars or not raw):
        lines.append("[" + ".".join(json.dumps(p) for p in _path) + "]")
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in raw.items():
        if isinstance(v, dict):
            text += ("\n" if text else "") + to_toml(v, _path + (k,))
    return text


# ----- running ---------------------------------------------------------------------------------

def _level_suite(sens: Sensitivity, out_dir: Path, level: SweptLevel) -> Suite:
    """The level's suite, written to ``OUT/<folder>.toml`` so that its run folder records it (a
    resumed or rebuilt run reads the same file)."""
    path = out_dir / f"{level.folder}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# Written by `micromill sensitivity {sens.source}`: the base suite {sens.base.source} with one "
            f"field fixed.\n" + to_toml(level.raw))
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return suite_from_dict(load_toml(path), str(path))


def _is_finished(run_dir: Path, planned: int) -> bool:
    results, _ = read_case_log(run_dir / CASE_LOG)
    return len(results) >= planned and (run_dir / "results.json").is_file() and not _interrupted(run_dir)


def _interrupted(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "results.json").read_text())["summary"].get("interrupted") is not None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return True


def run_sensitivity(sens: Sensitivity, out_dir: Path, workers: int | None = 1, n_cases: int | None = None,
                    resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every level (``n_cases`` overrides the spec's cases per level); with ``resume`` a finished
    level is kept, an unfinished one resumed. Stops at the first interrupted level (Ctrl-C, SIGTERM:
    ``doc["interrupted"]``). Writes and returns the aggregate (``write_sensitivity``)."""
    out_dir = Path(out_dir)
    cases = sens.cases if n_cases is None else n_cases
    if not 1 <= cases <= MAX_CASES:
        raise ConfigError(sens.source, [f"--cases={cases}: allowed 1..{MAX_CASES}"])
    total = cases * sum(len(p.levels) for p in sens.parameters)
    if total > MAX_TOTAL_CASES:
        raise ConfigError(sens.source, [f"--cases={cases}: {total} cases in all; at most {MAX_TOTAL_CASES}"])
    if not resume and out_dir.is_dir() and any(out_dir.iterdir()):
        raise RunFolderError(f"--out {out_dir} is not empty: continue that sweep with --resume, or choose another "
                             f"--out")
    interrupted = None
    for p in sens.parameters:
        for level in p.levels:
            run_dir = out_dir / level.folder
            suite = _level_suite(sens, out_dir, level)
            started = (run_dir / RUN_PLAN).is_file()
            if started and _is_finished(run_dir, cases):
                continue
            if progress:
                print(f"micromill sensitivity: {p.label} = {fmt_value(level.value)} ({run_dir})", file=sys.stderr)
            summary = run_suite(suite, run_dir, workers=workers, n_cases=cases, progress=progress,
                                resume=resume and started)
            if summary["interrupted"]:
                interrupted = summary["interrupted"]
                break
        if interrupted:
            break
    doc = write_sensitivity(sens, out_dir)
    doc["interrupted"] = interrupted
    return doc


# ----- aggregation -----------------------------------------------------------------------------

def level_metrics(suite: Suite, results: list[CaseResult], metrics: tuple[str, ...]) -> dict[str, Any]:
    """Each metric over one level's finished cases, aggregated as ``suite`` defines it (the runner's
    ``summarize``); a proportion also as ``k`` of ``n`` with its Wilson 95 % interval ``ci95``."""
    summary = summarize(suite, results)
    out = {}
    for name in metrics:
        m = summary["metrics"][name]
        entry = {"aggregate": m["aggregate"], "value": m["value"], "n": m["count"]}
        if "ci95" in m:
            entry["k"] = int(round(m["value"] * m["count"])) if m["count"] else 0
            entry["ci95"] = m["ci95"]
        out[name] = entry
    return out


def collect(sens: Sensitivity, out_dir: Path) -> dict[str, Any]:
    """``sensitivity.json``'s content from the level run folders as they stand (a level not run yet
    has ``cases`` 0 and no metrics)."""
    params = []
    planned: set[int] = set()         # cases each level run was planned with (--cases overrides the spec's)
    for p in sens.parameters:
        levels = []
        for level in p.levels:
            run_dir = Path(out_dir) / level.folder
            entry: dict[str, Any] = {"value": level.value, "run": level.folder, "cases": 0, "errored": 0,
                                     "metrics": {}}
            if (run_dir / RUN_PLAN).is_file():
                plan = RunPlan.read(run_dir)
                planned.add(int(plan.cases))
                suite = plan.suite()
                results, _ = read_case_log(run_dir / CASE_LOG)
                entry.update(cases=len(results), errored=sum(r.error is not None for r in results),
                             metrics=level_metrics(suite, results, sens.metrics))
            levels.append(entry)
        params.append({"group": p.group, "key": p.key, "default": p.default, "note": p.note, "levels": levels})
    base = sens.base
    return {"name": sens.name, "description": sens.description, "spec": sens.source, "base_suite": base.source,
            "seed": base.seed, "cases_per_level": max(planned) if planned else sens.cases,
            "metrics": {m: {"aggregate": base.metrics[m].aggregate, "description": base.metrics[m].description}
                        for m in sens.metrics},
            "parameters": params}


def write_sensitivity(sens: Sensitivity, out_dir: Path) -> dict[str, Any]:
    """``sensitivity.json``, ``sensitivity.png`` and ``sensitivity.md`` in ``out_dir``; returns the document."""
    from scenarios.runner import _clean, _json_default, _write_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = collect(sens, out_dir)
    _write_atomic(out_dir / RESULTS_JSON, json.dumps(_clean(doc), indent=1, default=_json_default))
    plot(doc, out_dir / PLOT)
    (out_dir / SUMMARY_MD).write_text(markdown(doc))
    return doc


def rebuild(sens: Sensitivity, out_dir: Path) -> dict[str, Any]:
    """``--report-only``: the outputs again from the run folders in ``out_dir`` (nothing runs)."""
    if not Path(out_dir).is_dir():
        raise RunFolderError(f"--out {out_dir}: no such folder (run the sweep first)")
    doc = write_sensitivity(sens, out_dir)
    doc["interrupted"] = None
    return doc


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def metric_cell(m: dict[str, Any] | None) -> str:
    """One table cell: ``k/n (lo-hi %)`` for a proportion, else the value."""
    if not m:
        return "–"
    if "ci95" in m:
        lo, hi = m["ci95"]
        ci = f" ({100 * lo:.0f}–{100 * hi:.0f} %)" if lo is not None and math.isfinite(lo) else ""
        return f"{m['k']}/{m['n']}{ci}"
    return _fmt(m["value"])


def markdown(doc: dict[str, Any]) -> str:
    """One table per parameter: a row per level (the default marked), a column per metric."""
    names = list(doc["metrics"])
    md = [f"# Sensitivity: {doc['name']}", "", doc["description"], "",
          f"Base suite `{doc['base_suite']}` (seed {doc['seed']}), {doc['cases_per_level']} cases per level, the same "
          f"case seeds at every level; one parameter at a time, the others as the base suite draws them. "
          f"Proportions: successes/cases (Wilson 95 % interval).", ""]
    header = "| level | cases | " + " | ".join(f"{n} ({doc['metrics'][n]['aggregate']})" for n in names) + " |"
    for p in doc["parameters"]:
        md += [f"## `{p['group']}.{p['key']}`", ""] + ([p["note"], ""] if p["note"] else [])
        md += [header, "|" + " --- |" * (len(names) + 2)]
        for lv in p["levels"]:
            mark = " (default)" if _same(lv["value"], p["default"]) else ""
            cases = f"{lv['cases']}" + (f", {lv['errored']} errored" if lv["errored"] else "")
            md.append(f"| {_fmt(lv['value'])}{mark} | {cases} | "
                      + " | ".join(metric_cell(lv["metrics"].get(n)) for n in names) + " |")
        md.append("")
    return "\n".join(md)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def plot(doc: dict[str, Any], path: Path) -> None:
    """One row per parameter, one column per metric: the metric against the level (proportions with
    their Wilson 95 % interval; a positive range spanning a decade or more on a log axis), the
    default level marked by a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["metrics"])
    rows = doc["parameters"]
    fig, axes = plt.subplots(len(rows), len(names), figsize=(3.2 * len(names), 2.4 * len(rows)), squeeze=False)
    for r, p in enumerate(rows):
        values = [lv["value"] for lv in p["levels"]]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else list(range(len(values)))
        for c, name in enumerate(names):
            ax = axes[r][c]
            pts = [(x, lv["metrics"].get(name)) for x, lv in zip(xs, p["levels"]) if lv["metrics"].get(name)]
            pts = [(x, m) for x, m in pts if m["value"] is not None and math.isfinite(m["value"])]
            if pts:
                x, ms = zip(*pts)
                y = [m["value"] for m in ms]
                if all("ci95" in m for m in ms):
                    lo = [max(v - m["ci95"][0], 0.0) for v, m in zip(y, ms)]
                    hi = [max(m["ci95"][1] - v, 0.0) for v, m in zip(y, ms)]
                    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, color="#4477aa")
                    ax.set_ylim(-0.05, 1.05)
                else:
                    ax.plot(x, y, marker="o", color="#4477aa")
            for x, v in zip(xs, values):
                if _same(v, p["default"]):
                    ax.axvline(x, color="#cc3311", linestyle="--", linewidth=1, label="default")
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in values])
            elif min(values) > 0 and max(values) >= 10 * min(values):     # a range over a decade: log x
                ax.set_xscale("log")
            if r == 0:
                ax.set_title(f"{name} ({doc['metrics'][name]['aggregate']})", fontsize=9)
            if c == 0:
                ax.set_ylabel(p["key"], fontsize=8)
            ax.set_xlabel(f"{p['group']}.{p['key']}", fontsize=7)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"{doc['name']}: {doc['cases_per_level']} cases per level (same seeds), default dashed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
