"""Hypothesis strategies for what a scenario varies, built from the scene/job schema's bounds and the
shipped suites' distributions, shrinking towards the default scene.

Each scene strategy draws a dict of dotted scene overrides that ``scenes.spec.load_scene(None,
overrides)`` accepts (every drawn dict is checked against the loader, so cross-field rules such as
``thickness_min_mm <= thickness_max_mm`` hold); ``perception_errors()`` draws milling-job
parameters instead. Every field is ``one_of(just(default), range)``: hypothesis shrinks a
``one_of`` to its first branch, so a failing example shrinks field by field to the default scene
(``scenes/default.toml``; a field the file leaves out: the schema's default), and what remains
non-default is what the failure needs.

Where the ranges come from (one source each, never restated here):
- the hard bounds: the scene schema (``scenes.spec.SceneFile``) and the job's parameter model
  (``scenarios.jobs.JOBS``): a range is always clipped to them;
- the plausible ranges: the shipped suites' ``[parameters]`` distributions: skull shape,
  thickness, unevenness, pose and hardness from ``milling_oracle.toml``; rig and camera placement
  from ``calibration.toml``; milling physics from the levels of ``sensitivity.toml`` (the
  plausible ranges of docs/bone_model.md), the oracle's error from the sensitivity levels and
  the paper's 0.2432.

Groups (``SCENE_GROUPS``): ``skull`` (``skulls()``), ``rig`` (``rigs()``), ``physics``
(``physics()``); ``scene_overrides()`` merges the groups asked for. Job parameters are drawn
apart from the scene: ``perception_errors()`` (the oracle's error model) and ``faults()`` (fault
schedules: dropped frames, image latency, keypoint and completion outliers, joint-state delay and
freezes, a lost connection mid-cut; ``scenarios.testing.fault_strategies``, re-exported here),
both milling-job parameter dicts shrinking towards "none".
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import annotated_types
from hypothesis import strategies as st

from scenes.fields import resolve
from scenes.schema import ConfigError, load_toml
from scenes.spec import DEFAULT_SCENE, SceneFile, scene_from_dict
from scenarios.testing.fault_strategies import faults

SUITES_DIR = Path(__file__).resolve().parent.parent

#: where each group's plausible ranges are read: (suite file, dotted-key prefixes)
_SKULL_SOURCE = ("milling_oracle.toml", ("skull.", "milling.hardness_"))
_RIG_SOURCE = ("calibration.toml", ("mscs.", "lighting."))
_PHYSICS_SOURCE = "sensitivity.toml"
#: scene fields that are seeds: drawn over their whole range (no magnitude to shrink but to the default)
_SEED_KEYS = ("skull.seed",)


@functools.cache
def _default_raw() -> dict:
    return load_toml(DEFAULT_SCENE)


def _lookup(raw: Mapping, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def scene_default(key: str) -> Any:
    """The default scene's value of the dotted scene field ``key`` (the file's, else the schema's
    default); ``KeyError`` for a key that is no scene field."""
    value = _lookup(_default_raw(), key)
    if value is not None:
        return value
    parts = tuple(key.split("."))
    tp, _, info = resolve(SceneFile, parts)
    if tp is None:
        raise KeyError(f"{key!r} is not a field of the scene (scenes.spec.SceneFile)")
    node: Any = SceneFile.model_fields[parts[0]].get_default(call_default_factory=True)
    for part in parts[1:]:
        node = getattr(node, part)
    return node


def field_bounds(model: Any, key: str) -> tuple[type | None, float | None, float | None]:
    """(type, lo, hi) of the dotted field ``key`` of the pydantic ``model`` (None where unbounded)."""
    tp, meta, _ = resolve(model, tuple(key.split(".")))
    lo = hi = None
    for m in meta:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo = math.nextafter(m.gt, math.inf) if isinstance(m.gt, float) else m.gt + 1
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi = math.nextafter(m.lt, -math.inf) if isinstance(m.lt, float) else m.lt - 1
    return tp, lo, hi


def value_strategy(tp: type | None, default: Any, lo: Any = None, hi: Any = None,
                   choices: tuple | None = None) -> st.SearchStrategy:
    """``one_of(just(default), <range>)``: floats in [lo, hi], integers in [lo, hi], or ``choices``;
    shrinks to ``default``."""
    if choices is not None:
        rest = [c for c in choices if c != default]
        return st.one_of(st.just(default), st.sampled_from(rest)) if rest else st.just(default)
    if tp is int:
        return st.one_of(st.just(default), st.integers(int(lo), int(hi)))
    return st.one_of(st.just(default), st.floats(float(lo), float(hi), allow_nan=False, allow_infinity=False))


def _clip(model: Any, key: str, lo: float, hi: float) -> tuple[type | None, float, float]:
    """[lo, hi] clipped to the schema's bounds of ``key`` (ValueError when nothing is left)."""
    tp, blo, bhi = field_bounds(model, key)
    lo = lo if blo is None else max(lo, blo)
    hi = hi if bhi is None else min(hi, bhi)
    if lo > hi:
        raise ValueError(f"{key}: the plausible range lies outside the schema's bounds [{blo}, {bhi}]")
    return tp, lo, hi


def scene_field(key: str, lo: float | None = None, hi: float | None = None) -> st.SearchStrategy:
    """One scene field: ``one_of(just(default), range)`` over [lo, hi] clipped to the schema's bounds
    (lo/hi None: the schema's own)."""
    tp, blo, bhi = field_bounds(SceneFile, key)
    if tp is None:
        raise KeyError(f"{key!r} is not a field of the scene (scenes.spec.SceneFile)")
    tp, lo, hi = _clip(SceneFile, key, blo if lo is None else lo, bhi if hi is None else hi)
    return value_strategy(tp, scene_default(key), lo, hi)


def _suite_ranges(file: str, prefixes: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``[parameters.scene]`` uniform/integers ranges of a shipped suite, for keys with ``prefixes``."""
    table = load_toml(SUITES_DIR / file).get("parameters", {}).get("scene", {})
    out = {}
    for key, dist in table.items():
        if key.startswith(prefixes):
            for kind in ("uniform", "integers"):
                if kind in dist:
                    out[key] = tuple(dist[kind])
    return out


def _physics_ranges() -> dict[str, tuple[float, float]]:
    """The bone model's plausible ranges: the lowest and highest level of each scene row of
    ``sensitivity.toml``."""
    rows = load_toml(SUITES_DIR / _PHYSICS_SOURCE).get("scene", {})
    return {key: (min(row["levels"]), max(row["levels"])) for key, row in rows.items()}


def _loads(overrides: dict[str, Any]) -> bool:
    try:
        scene_from_dict(_default_raw(), str(DEFAULT_SCENE), overrides)
    except ConfigError:
        return False
    return True


def _group(ranges: dict[str, tuple[float, float]]) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for key, (lo, hi) in ranges.items():
        fields[key] = scene_field(key) if key in _SEED_KEYS else scene_field(key, lo, hi)
    return st.fixed_dictionaries(fields).filter(_loads)


def skulls() -> st.SearchStrategy[dict[str, Any]]:
    """Skull shape (dome radius, bregma-lambda), thickness, unevenness, pose (roll, pitch, yaw), the
    skull's seed and its hardness field: scene overrides over ``milling_oracle.toml``'s ranges."""
    return _group(_suite_ranges(*_SKULL_SOURCE))


def rigs() -> st.SearchStrategy[dict[str, Any]]:
    """Rig and camera placement (working distance, vergence, baseline, focal lengths, principal
    points) and lighting: scene overrides over ``calibration.toml``'s ranges."""
    return _group(_suite_ranges(*_RIG_SOURCE))


def physics() -> st.SearchStrategy[dict[str, Any]]:
    """Milling physics within the bone model's plausible ranges (cut rate, head stiffness, breach
    tolerance, break threshold, hardness top, crack thickness): scene overrides over
    ``sensitivity.toml``'s levels."""
    return _group(_physics_ranges())


#: the scene groups ``scene_overrides`` merges (a new group of scene fields registers here)
SCENE_GROUPS: dict[str, Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    "skull": skulls, "rig": rigs, "physics": physics}


def scene_overrides(*groups: str) -> st.SearchStrategy[dict[str, Any]]:
    """Scene overrides of the named ``groups`` (default: all of ``SCENE_GROUPS``) merged into one
    dict, checked to load together."""
    names = groups or tuple(SCENE_GROUPS)
    unknown = [g for g in names if g not in SCENE_GROUPS]
    if unknown:
        raise ValueError(f"unknown scene group(s) {unknown}; known: {sorted(SCENE_GROUPS)}")
    parts = [SCENE_GROUPS[g]() for g in names]
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()}).filter(_loads)


def perception_errors() -> st.SearchStrategy[dict[str, Any]]:
    """Milling-job parameters for the SIM-ONLY completion oracle (``twin.completion_oracle``):
    ``perception = "oracle"`` and its error model (``oracle_mae`` up to the paper's 0.2432,
    absolute or relative, the end exponent and the AR(1) correlation within the job's bounds),
    each shrinking to the job's default (``oracle_mae`` to its default 0.2432)."""
    from scenarios.jobs import JOBS, MillingJobParams

    defaults = JOBS["milling"].parameters
    levels = load_toml(SUITES_DIR / _PHYSICS_SOURCE)["job"]["oracle_mae"]["levels"]
    fields: dict[str, st.SearchStrategy] = {"perception": st.just("oracle")}
    tp, lo, hi = _clip(MillingJobParams, "oracle_mae", min(levels), max(defaults["oracle_mae"], *levels))
    fields["oracle_mae"] = value_strategy(tp, defaults["oracle_mae"], lo, hi)
    fields["oracle_error"] = value_strategy(str, defaults["oracle_error"], choices=("absolute", "relative"))
    for key in ("oracle_end_exponent", "oracle_rho"):
        tp, lo, hi = field_bounds(MillingJobParams, key)
        fields[key] = value_strategy(tp, defaults[key], lo, hi)
    return st.fixed_dictionaries(fields)


__all__ = ["SCENE_GROUPS", "faults", "field_bounds", "perception_errors", "physics", "rigs", "scene_default", "scene_field",
           "scene_overrides", "skulls", "value_strategy"]
