"""Renders ``docs/configuration.md`` from the configuration models, so the field tables cannot
drift from the code: ``python -m scenarios.config_docs > docs/configuration.md``
(``tests/test_config_docs.py`` checks that the committed file is the output)."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from controllers.settings import ControllerSettings
from scenes.fields import _fields_of, _strip, allowed_text, interval_text
from scenarios.jobs import JOBS
from scenarios.sensitivity import MAX_LEVELS, MAX_SWEPT, SensitivityFile
from scenarios.suite import AGGREGATES_BY_KIND, MetricTable, SuiteFile, ThresholdTable
from scenes.spec import SceneFile

#: unit of a field from the end of its name (longest first)
UNITS = [("_n_per_mm", "N/mm"), ("_n_per_m", "N/m"), ("_mm_per_px", "mm/px"), ("_um_s", "µm/s"),
         ("_mm_s", "mm/s (`_mm_s` in {S}: mm)"), ("_m_s", "m/s"), ("_rpm", "rpm"), ("_hz", "Hz"), ("_deg", "deg"),
         ("_rad", "rad"), ("_mm", "mm"), ("_um", "µm"), ("_px", "px"), ("_dn", "DN"), ("_s", "s"), ("_m", "m"),
         ("_n", "N")]
SAFETY_UNITS = {"workspace_min_mm_s": "mm, in {S}", "workspace_max_mm_s": "mm, in {S}"}


def unit_of(name: str) -> str:
    if name in SAFETY_UNITS:
        return SAFETY_UNITS[name]
    for suffix, unit in UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _type_text(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "string"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        texts = [_type_text(_strip(a)[0]) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(dict.fromkeys(texts))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"list of {len(args)} {_type_text(_strip(args[0])[0])}"
    if origin is list:
        return f"list of ({_type_text(_strip(args[0])[0])})" if args else "list"
    if origin is dict:
        return "table (name -> distribution)" if getattr(_strip(args[1])[0], "__name__", "") == "Distribution" \
            else "table"
    return {float: "number", int: "integer", bool: "bool", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _allowed(tp: Any, meta: list) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return ""                 # a union of plain types: the type column says it
    if typing.get_origin(tp) is typing.Literal:
        return ", ".join(f"`{a!r}`" for a in typing.get_args(tp)).replace("'", '"')
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return "each " + _allowed(*_strip(args[0]))
    if origin is list and args:
        n = [m for m in meta if hasattr(m, "min_length") or hasattr(m, "max_length")]
        lengths = "".join(f" {type(m).__name__.replace('MinLen', 'min').replace('MaxLen', 'max')} "
                          f"{getattr(m, 'min_length', getattr(m, 'max_length', ''))}" for m in n)
        entries = _allowed(*_strip(args[0]))
        return "; ".join(t for t in ((f"entries: {entries}" if entries else ""), lengths.strip()) if t)
    interval = interval_text(meta)
    if interval:
        return interval
    text = allowed_text(tp, meta)
    return "" if text in ("a finite number", "an integer", "true or false", "a string") else text


def _default(info) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        return "{}" if not value else "(table)"
    text = repr(value).replace("'", '"')
    return f"`{text}`"


def rows(model: Any, prefix: str) -> list[str]:
    out = []
    for name, info in (_fields_of(model) or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        tp, meta = _strip(info.annotation)
        meta = list(info.metadata) + meta
        if _fields_of(tp) is not None:
            out.extend(rows(tp, path))
            continue
        if typing.get_origin(tp) is dict:
            value_type = _strip(typing.get_args(tp)[1])[0]
            if _fields_of(value_type) is not None:
                out.extend(rows(value_type, f"{path}.<name>"))
                continue
        desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        allowed = _allowed(tp, meta).replace("|", "\\|")
        out.append(f"| `{path}` | {_type_text(tp)} | {unit_of(name)} | {_default(info)} | {allowed} | {desc} |")
    return out


HEADER = ["| Field | Type | Unit | Default | Allowed | Description |", "|---|---|---|---|---|---|"]


def table(model: Any, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    return HEADER + [r for r in rows(model, prefix) if not any(r.startswith(f"| `{s}") for s in skip)]


def render() -> str:
    md = ["# Configuration files", "",
          "<!-- Generated by `python -m scenarios.config_docs > docs/configuration.md`; do not edit by hand "
          "(tests/test_config_docs.py checks it). -->", "",
          "Every configuration file is a TOML file checked against a typed model (pydantic v2) when it is "
          "loaded: types (a bool is not a number; an integer field takes no 2.0), finite numbers, the bounds "
          "below, enumerations, unknown keys (usually typos) and the cross-field rules named in each section. "
          "Every problem of a file is reported at once, as `scenes.schema.ConfigError`, one line per field "
          "naming the file, the field (dotted path), the value and what is allowed; `micromill` then exits "
          "with status 2. Units are in the field names of files (`thickness_min_mm`, `cy_px`); inside "
          "the code everything is SI.", "",
          "## Scene files (`scenes/*.toml`)", "",
          "Loaded by `scenes.spec.load_scene(path, overrides)` (model `scenes.spec.SceneFile`, built into the "
          "SI `SceneSpec`). `overrides` and a suite's `[parameters.scene]` use the dotted paths below, e.g. "
          "`\"skull.seed\"` or `\"controllers.milling.traverse_speed_m_s\"`. The `[skull]` and `[milling]` "
          "fields are derived from `scenes.skull_params.SkullParams` and `scenes.milling_params.MillingParams` "
          "(SI), `drill.burr_radius_mm` from `MillingParams.burr_radius_m`.", "",
          "Cross-field rules: `skull.thickness_min_mm <= skull.thickness_max_mm`; `milling.hardness_min <= "
          "milling.hardness_max`; `lighting.direction_s` points upwards (z > 0); "
          "`sensors.joint_states.rate_hz >= 1 / control.period_s`; `safety.workspace_min_mm_s` below "
          "`safety.workspace_max_mm_s` on every axis; `backends.coppeliasim.left_sensor_path` and "
          "`right_sensor_path` both set or both empty; `robot.description` must exist; "
          "`controllers.premeasurement.camera_model` is `\"estimate\"` or a camera model that loads (a preset "
          "in `controllers/camera_models` or a file).", ""]
    md += table(SceneFile, skip=("controllers.",))
    md += ["", "## The `[controllers]` table", "",
           "Optional; every field defaults to the value below (`controllers.settings.ControllerSettings`; the "
           "same frozen models the controllers take: `PremeasurementSettings`, `MillingSettings`, which nests "
           "the velocity damper `DamperParams` as `damper` and the QP motion controller's "
           "`MillingControlParams` as `control`, as in the code, so each value has one path). Names and values "
           "are SI, as in the code. Settable in a scene file (`[controllers.milling]` "
           "`traverse_speed_m_s = 4e-3`, `[controllers.milling.damper]` `through_level = 0.99`) and variable "
           "from a suite (`\"controllers.milling.traverse_speed_m_s\" = { uniform = [3e-3, 5e-3] }`).", "",
           "Cross-field rules: `damper.v_approach_m_s >= damper.v_cut_max_m_s >= damper.v_cut_min_m_s`; "
           "`damper.contact_level < damper.through_level`.", ""]
    md += table(ControllerSettings, "controllers")
    md += ["", "## Suite files (`scenarios/*.toml`)", "",
           "Loaded by `scenarios.suite.load_suite(path)` (model `scenarios.suite.SuiteFile`). "
           "`[parameters.scene]` and `[parameters.job]` map a field (a scene field's dotted path, or a job "
           "parameter) to a distribution: `{ uniform = [lo, hi] }` (float fields only), "
           "`{ integers = [lo, hi] }` (integer fields only, both ends included) or `{ choices = [...] }` (1 to "
           "1000 values). Every value a distribution can produce is checked against the field: the kind, each "
           "end of a range, each choice, and the cross-field rules at the corners of every pair of sampled "
           "ranges. `suite.name` names the output folder `runs/<name>`: letters, digits, `_`, `.`, `-`, not "
           "starting with `.`. `micromill run --cases N` takes 1 to 100000, `--workers N` 1 to 64.", ""]
    md += table(SuiteFile, skip=("metrics.", "thresholds."))
    md += ["", "Each `[metrics.<name>]` (the job must report the metric) and `[thresholds.<name>]` (of a metric "
           "in `[metrics]`; `min <= max`, at least one given):", ""]
    md += HEADER + rows(MetricTable, "metrics.<name>") + rows(ThresholdTable, "thresholds.<name>")
    md += ["", "Aggregates by metric kind: " + "; ".join(f"{kind}: {', '.join(a)}"
                                                        for kind, a in AGGREGATES_BY_KIND.items())
           + " (`proportion`, with a Wilson 95 % interval, needs 0/1 values).", "",
           "## Sensitivity specs (`scenarios/sensitivity.toml`)", "",
           "Loaded by `scenarios.sensitivity.load_sensitivity(path)` (model `scenarios.sensitivity.SensitivityFile`) "
           "for `micromill sensitivity` ([bone model](bone_model.md)). `[scene.\"<dotted field>\"]` and "
           "`[job.<parameter>]` name a field of the base suite's scene or job and its levels (file units, "
           f"2 to {MAX_LEVELS} distinct values, at most {MAX_SWEPT} parameters); every level is checked like a "
           "suite's value (the field exists, its bounds, the cross-field rules against the base suite's ranges), "
           "and so is every `[fixed]` value. Parameters x levels x cases is at most 100000.", ""]
    md += table(SensitivityFile)
    md += ["", "## Job parameters (`[parameters.job]`)", "",
           "Each job (`scenarios.jobs.JOBS`) declares its parameters as a model; a case starts from the "
           "defaults and the jobs read `ctx.job_parameters` as a plain dict of these names, validated when the "
           "suite is loaded.", ""]
    for name, entry in JOBS.items():
        md += [f"### `{name}` (runs on: {', '.join(entry.backends)})", ""]
        md += table(entry.params_model)
        kinds: dict[str, list[str]] = {}
        for metric, kind in entry.metrics.items():
            kinds.setdefault(kind, []).append(f"`{metric}`")
        md += ["", "Metrics: " + "; ".join(f"{kind}: {', '.join(ms)}" for kind, ms in kinds.items()) + ".", ""]
    return "\n".join(md).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
