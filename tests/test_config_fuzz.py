"""Configuration files under attack: mutated copies of the shipped suite and scene files either
load with every value inside its declared bounds, or fail with ``ConfigError`` alone; and one
plain test per class of bad input, checking that the message names the file, the field, the
value and what is allowed."""
import copy
import re
import math
import tomllib
import typing
from pathlib import Path

import annotated_types
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from scenes.fields import resolve
from scenarios.cli import main
from scenarios.jobs import JOBS
from scenarios.suite import AGGREGATES_BY_KIND, load_suite, suite_from_dict
from scenes.schema import ConfigError
from scenes.spec import SCENES_DIR, SceneFile, _apply_overrides, load_scene, scene_from_dict

ROOT = Path(__file__).resolve().parents[1]
#: suite files, and sensitivity specs (a [sensitivity] table: scenarios.sensitivity reads them)
SUITE_FILES = sorted(p for p in (ROOT / "scenarios").glob("*.toml") if "sensitivity" not in tomllib.loads(p.read_text()))
SPEC_FILES = sorted(p for p in (ROOT / "scenarios").glob("*.toml") if "sensitivity" in tomllib.loads(p.read_text()))
SCENE_FILES = sorted(SCENES_DIR.glob("*.toml"))
RAW_SUITES = {p.name: tomllib.loads(p.read_text()) for p in SUITE_FILES}
RAW_SCENES = {p.name: tomllib.loads(p.read_text()) for p in SCENE_FILES}
SOURCE = "fuzzed.toml"

BAD_VALUES = [10**400, -10**400, 10**20, float("nan"), float("inf"), -float("inf"), -1, -1.0, -1e-9, 0, 0.0,
              1e308, "", "x", "10", True, False, None, [], {}, [1.0, 2.0], {"a": 1}, "../x", "/etc/passwd",
              "a/b", "a\\b", ".hidden", 2**32, 2**63, 2.5, "proportion"]


# ----- mutations ---------------------------------------------------------------------------

def _paths(node, prefix=()):
    """Every (path, value) in a nested dict/list."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((prefix + (k,), v))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((prefix + (i,), v))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(raw, path):
    node = raw
    for p in path[:-1]:
        node = node[p]
    return node


@st.composite
def mutated(draw, raws: dict):
    name = draw(st.sampled_from(sorted(raws)))
    raw = copy.deepcopy(raws[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        if not paths:
            break
        path, value = draw(st.sampled_from(paths))
        parent = _parent(raw, path)
        op = draw(st.sampled_from(["value", "value", "delete", "unknown", "swap", "uniform", "integers",
                                   "proportion", "name", "choices"]))
        if op == "value":
            parent[path[-1]] = draw(st.sampled_from(BAD_VALUES) | st.floats() | st.integers(-10**30, 10**30)
                                    | st.text(max_size=6))
        elif op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "unknown" and isinstance(value, dict):
            value[draw(st.sampled_from(["colour", "", "x.y", "seed2"]))] = draw(st.sampled_from(BAD_VALUES))
        elif op == "swap" and isinstance(value, list) and len(value) == 2:
            value.reverse()                                  # [lo, hi] -> [hi, lo]
        elif op == "swap" and isinstance(value, dict):       # x_min <-> x_max in one table
            for k in list(value):
                other = k.replace("_min", "_max")
                if other != k and other in value:
                    value[k], value[other] = value[other], value[k]
        elif op == "uniform" and isinstance(value, dict) and len(value) == 1:
            (args,) = value.values()
            parent[path[-1]] = {"uniform": args if isinstance(args, list) and len(args) == 2 else [0, 1]}
        elif op == "integers" and isinstance(value, dict) and len(value) == 1:
            parent[path[-1]] = {"integers": draw(st.sampled_from([[0, 10], [0.5, 1.5], [5, 1], [0, 10**400]]))}
        elif op == "choices" and isinstance(value, dict) and len(value) == 1:
            parent[path[-1]] = {"choices": draw(st.lists(st.sampled_from(BAD_VALUES), min_size=0, max_size=3))}
        elif op == "proportion" and isinstance(value, dict) and "aggregate" in value:
            value["aggregate"] = "proportion"
        elif op == "name" and isinstance(raw.get("suite"), dict):
            raw["suite"]["name"] = draw(st.sampled_from(["../x", "/abs", "a/b", "a\\b", "", ".", "..", " x",
                                                          "x" * 101]))
    return name, raw


# ----- what "in bounds" means, read from the models' metadata --------------------------------

def _within(value, meta) -> bool:
    for m in meta:
        if isinstance(m, annotated_types.Ge) and not value >= m.ge:
            return False
        if isinstance(m, annotated_types.Gt) and not value > m.gt:
            return False
        if isinstance(m, annotated_types.Le) and not value <= m.le:
            return False
        if isinstance(m, annotated_types.Lt) and not value < m.lt:
            return False
    return True


def assert_in_bounds(model, raw, prefix=()):
    """Every number in ``raw`` is finite, of its field's type and within its field's bounds, and
    every key is a field of ``model`` (independently of the loader's own checks)."""
    for path, value in _paths(raw):
        tp, meta, _ = resolve(model, path)
        assert tp is not None, f"{'.'.join(map(str, prefix + path))} was accepted but is not a field"
        if tp is float:
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (path, value)
            assert math.isfinite(value) and _within(value, meta), (path, value, meta)
        elif tp is int:
            assert isinstance(value, int) and not isinstance(value, bool) and _within(value, meta), (path, value)
        elif tp is bool:
            assert isinstance(value, bool), (path, value)
        elif tp is str:
            assert isinstance(value, str), (path, value)
        elif typing.get_origin(tp) is typing.Literal:
            assert value in typing.get_args(tp), (path, value)


def _check_messages(exc: ConfigError):
    assert exc.errors and all(isinstance(e, str) and e.strip() for e in exc.errors)
    assert str(exc).startswith(SOURCE)


def check_scene(raw):
    try:
        scene = scene_from_dict(raw, SOURCE)
    except ConfigError as exc:
        _check_messages(exc)
        return
    assert_in_bounds(SceneFile, raw)
    for name in ("control_period_s",):
        assert math.isfinite(getattr(scene, name))
    for arr in (scene.T_s_to_r, scene.calibration_targets_r(), scene.robot.home_q):
        assert np.all(np.isfinite(arr))


def check_suite(raw):
    try:
        suite = suite_from_dict(raw, SOURCE)
    except ConfigError as exc:
        _check_messages(exc)
        return
    assert "/" not in suite.name and "\\" not in suite.name and not suite.name.startswith(".")
    assert 1 <= suite.cases <= 100000
    entry = JOBS[suite.job]
    for name, m in suite.metrics.items():
        assert m.aggregate in AGGREGATES_BY_KIND[entry.metrics[name]]
    rng = np.random.default_rng(0)
    for _ in range(5):     # whatever the ranges produce loads
        overrides = {k: d.sample(rng) for k, d in suite.scene_parameters.items()}
        load_scene(suite.scene_path, overrides)
        for k, v in overrides.items():
            tp, meta, _ = resolve(SceneFile, tuple(k.split(".")))
            if tp is float:
                assert math.isfinite(v) and _within(v, meta)
        job = {**entry.parameters, **{k: d.sample(rng) for k, d in suite.job_parameters.items()}}
        entry.params_model.model_validate(job)
        assert_in_bounds(entry.params_model, job, ("parameters", "job"))


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated(RAW_SUITES))
def test_fuzzed_suites_load_in_bounds_or_give_config_errors(case):
    check_suite(case[1])


@FUZZ
@given(mutated(RAW_SCENES))
def test_fuzzed_scenes_load_in_bounds_or_give_config_errors(case):
    check_scene(case[1])


@pytest.mark.slow
@FUZZ_SLOW
@given(st.one_of(mutated(RAW_SUITES).map(lambda c: ("suite", c[1])),
                 mutated(RAW_SCENES).map(lambda c: ("scene", c[1]))))
def test_fuzzed_configs_many(case):
    kind, raw = case
    (check_suite if kind == "suite" else check_scene)(raw)


@FUZZ
@given(st.dictionaries(st.sampled_from(["skull.seed", "skull.thickness_min_mm", "mscs.width_px", "lighting.intensity",
                                        "controllers.milling.traverse_speed_m_s", "safety.armed",
                                        "controllers.premeasurement.grid_points_per_axis", "milling.hardness_max",
                                        "backends.sas.prefix", "nope.x", "skull"]),
                       st.sampled_from(BAD_VALUES) | st.floats() | st.integers(), max_size=3))
def test_fuzzed_overrides(overrides):
    try:
        scene = load_scene(None, overrides)
    except ConfigError as exc:
        assert exc.errors
        return
    raw = _apply_overrides(RAW_SCENES["default.toml"], overrides, [])
    assert_in_bounds(SceneFile, raw)
    assert scene.controllers.milling.traverse_speed_m_s > 0


def test_shipped_files_load():
    from scenarios.sensitivity import load_sensitivity

    assert SPEC_FILES, "scenarios/sensitivity.toml is a sensitivity spec"
    for p in SUITE_FILES:
        load_suite(p)
    for p in SPEC_FILES:
        load_sensitivity(p)
    for p in SCENE_FILES:
        load_scene(p)


def test_the_bounds_check_can_fail():
    raw = copy.deepcopy(RAW_SCENES["default.toml"])
    raw["skull"]["thickness_min_mm"] = 5.0
    with pytest.raises(AssertionError):
        assert_in_bounds(SceneFile, raw)


# ----- one test per class of bad input -----------------------------------------------------

def _errors(raw: dict, load, changes: dict) -> str:
    """``raw`` changed at each ``table__field`` key (``_DELETE`` deletes it), loaded: the ConfigError's text."""
    raw = copy.deepcopy(raw)
    for key, value in changes.items():
        *tables, leaf = key.split("__")
        node = raw
        for t in tables:
            node = node.setdefault(t, {})
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    with pytest.raises(ConfigError) as exc:
        load(raw, SOURCE)
    text = str(exc.value)
    assert text.startswith(SOURCE)
    return text


def scene_errors(**changes) -> str:
    return _errors(RAW_SCENES["default.toml"], scene_from_dict, changes)


def suite_errors(name="milling.toml", **changes) -> str:
    return _errors(RAW_SUITES[name], suite_from_dict, changes)


_DELETE = object()


def test_huge_integer_in_a_float_field():
    text = scene_errors(skull__thickness_min_mm=10**400, drill__max_speed_rpm=-10**400)
    assert "skull.thickness_min_mm=<integer of 401 digits> must be a finite number in [0.05, 1]" in text
    assert "drill.max_speed_rpm=<integer of 401 digits> must be a finite number in [1, 100000]" in text


def test_huge_integer_in_an_int_field():
    assert "skull.seed=<integer of 401 digits> is outside [0, 9223372036854775807]" in scene_errors(
        skull__seed=10**400)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf(value):
    assert f"drill.burr_radius_mm={value!r} must be a finite number in [0.1, 3]" in scene_errors(
        drill__burr_radius_mm=value)


@pytest.mark.parametrize("value, allowed", [(True, "an integer in [16, 8192]"), ("960", "an integer in [16, 8192]"),
                                            (960.0, "an integer in [16, 8192]")])
def test_wrong_types_for_an_int(value, allowed):
    assert f"mscs.width_px={value!r} must be {allowed}" in scene_errors(mscs__width_px=value)


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_wrong_types_for_a_float(value):
    assert f"drill.burr_radius_mm={value!r} must be a finite number in [0.1, 3]" in scene_errors(
        drill__burr_radius_mm=value)


def test_wrong_type_for_a_bool():
    assert "safety.armed=1 must be true or false" in scene_errors(safety__armed=1)


def test_unknown_keys_and_missing_keys_and_all_at_once():
    text = scene_errors(lighting__colour="red", skull__seed2=1, drill__burr_radius_mm=_DELETE,
                        controllers__milling__speed=1.0)
    assert "lighting.colour is not a known field (known: ['ambient', 'direction_s', 'intensity'])" in text
    assert "skull.seed2 is not a known field" in text
    assert "drill.burr_radius_mm is required (a finite number in [0.1, 3])" in text
    assert "controllers.milling.speed is not a known field" in text and "traverse_speed_m_s" in text
    assert "4 invalid field(s)" in text


def test_min_above_max_in_scenes():
    text = scene_errors(skull__thickness_min_mm=0.6, skull__thickness_max_mm=0.5, milling__hardness_min=2.0,
                        milling__max_deflection_um=-1)
    assert "skull.thickness_min_mm=0.6 exceeds skull.thickness_max_mm=0.5" in text
    assert "milling.hardness_min=2 exceeds milling.hardness_max=1.4" in text
    assert "milling.max_deflection_um=-1 is outside [1, 5000]" in text


def test_controllers_table_is_checked():
    text = scene_errors(controllers__milling__traverse_speed_m_s=0.0, controllers__milling__initialisation="z0",
                        controllers__premeasurement__grid_points_per_axis=[3, 3, 1.5])
    assert "controllers.milling.traverse_speed_m_s=0.0 is outside (0, 0.05]" in text
    assert "controllers.milling.initialisation='z0' must be one of 'fitted', 'equal_height'" in text
    assert "controllers.premeasurement.grid_points_per_axis[2]=1.5 must be an integer in [2, 15]" in text
    raw = copy.deepcopy(RAW_SCENES["default.toml"])
    raw["controllers"] = {"milling": {"damper": {"through_level": 0.95}}}
    assert scene_from_dict(raw).controllers.milling.damper.through_level == 0.95
    assert load_scene(overrides={"controllers.milling.traverse_speed_m_s": 5e-3}).controllers.milling \
        .traverse_speed_m_s == 5e-3


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match="override 'skull.thickness': the scene has no field 'thickness'"):
        load_scene(overrides={"skull.thickness": 1})
    with pytest.raises(ConfigError, match=r"skull.seed=1.5 must be an integer"):
        load_scene(overrides={"skull.seed": 1.5})


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "a\\b", ".hidden", "..", "x y"])
def test_path_escaping_suite_names(name):
    text = suite_errors(suite__name=name)
    assert f"suite.name={name!r}: must be a plain name" in text and "no path separators" in text


def test_empty_and_wrong_typed_suite_fields():
    text = suite_errors(suite__name="", suite__cases=100001, suite__seed=True, suite__job="nope",
                        suite__description=3)
    assert "suite.name='' must be a string of 1-100 characters" in text
    assert "suite.cases=100001 is outside [1, 100000]" in text
    assert "suite.seed=True must be an integer in [0, 9223372036854775807]" in text
    assert "suite.job='nope': is not one of" in text and "'milling'" in text
    assert "suite.description=3 must be a string" in text


def test_sampled_ranges_are_checked_field_by_field():
    text = suite_errors(parameters__scene={
        "skull.unevenness_amplitude_mm": {"uniform": [0.0, 9.0]},           # upper end out of bounds
        "skull.bregma_lambda_mm": {"choices": [4.2, 99.0]},                  # one choice out of bounds
        "skull.seed": {"uniform": [0, 10]},                                  # uniform on an int field
        "skull.roll_deg": {"integers": [0, 3]},                              # integers on a float field
        "mscs.width_px": {"choices": [960, "wide"]},
        "robot.description": {"uniform": [0.0, 1.0]},                        # uniform on a string
        "skull.nope": {"choices": [1]},
    })
    assert ('parameters.scene."skull.unevenness_amplitude_mm".uniform[1]: skull.unevenness_amplitude_mm=9.0 is '
            'outside [0, 0.3]') in text
    assert 'parameters.scene."skull.bregma_lambda_mm".choices[1]: skull.bregma_lambda_mm=99.0 is outside' in text
    assert 'parameters.scene."skull.seed".uniform=[0, 10]: uniform samples floats, but skull.seed is an integer' in text
    assert 'parameters.scene."skull.roll_deg".integers=[0, 3]: integers samples integers, but skull.roll_deg is a ' \
           'float' in text
    assert "mscs.width_px='wide' must be an integer in [16, 8192]" in text
    assert 'parameters.scene."robot.description".uniform' in text
    assert "the scene has no field 'skull.nope'" in text


def test_cross_field_rules_at_the_corners_of_the_ranges():
    # each range is fine on its own and both all-low and all-high corners are fine, but
    # thickness_min = 0.6 with thickness_max = 0.45 can be drawn
    text = suite_errors(parameters__scene={"skull.thickness_min_mm": {"uniform": [0.25, 0.6]},
                                           "skull.thickness_max_mm": {"uniform": [0.45, 0.7]}})
    assert "skull.thickness_min_mm=0.6 exceeds skull.thickness_max_mm=0.45" in text
    text = suite_errors(parameters__scene={"milling.hardness_min": {"uniform": [0.7, 1.5]},
                                           "milling.hardness_max": {"uniform": [1.2, 1.6]}})
    assert "milling.hardness_min=1.5 exceeds milling.hardness_max=1.2" in text


def test_distribution_shapes():
    text = suite_errors(parameters__job={"oracle_mae": {"uniform": [0.3, 0.2]}, "perception": {"choices": []},
                                         "calibration_seed": {"integers": [0, 10**400]}},
                        parameters__scene={"controllers.milling.traverse_speed_m_s": {"uniform": [1e-3, float("nan")]},
                                           "skull.unevenness_amplitude_mm": {"normal": [0, 1]}})
    assert 'parameters.job.oracle_mae={\'uniform\': [0.3, 0.2]}: uniform=[0.3, 0.2]: lo exceeds hi' in text
    assert "unknown distribution 'normal'" in text
    assert "uniform must be [lo, hi] of two finite numbers, got [0.001, nan]" in text
    assert ("parameters.job.calibration_seed={'integers': [0, 1000000" in text
            and "integers must be [lo, hi] of two integers in [-2**63, 2**63 - 2], got [0, 1000000" in text)
    assert "choices must be a list of 1 to 1000 values" in text
    text = suite_errors(parameters__job={"calibration_seed": {"integers": [0.5, 2]}})
    assert "parameters.job.calibration_seed={'integers': [0.5, 2]}: integers must be [lo, hi] of two integers" in text


def test_job_parameters_are_typed_and_bounded():
    text = suite_errors(parameters__job={"perception": {"choices": ["magic"]},
                                         "calibration_seed": {"integers": [0, 2**32]},
                                         "speed": {"choices": [1]}})
    assert "parameters.job.perception='magic' must be one of 'cnn', 'oracle'" in text
    assert "parameters.job.calibration_seed=4294967296 is outside [0, 4294967295]" in text
    assert "parameters.job.\"speed\" is not a parameter of job 'milling'" in text


def test_controller_settings_a_suite_varies_are_typed_and_bounded():
    """The controllers' settings are the scene's [controllers] table, varied under [parameters.scene]."""
    text = suite_errors(parameters__scene={"controllers.premeasurement.radius_m": {"choices": [5e-3]},
                                           "controllers.milling.traverse_speed_m_s": {"uniform": [0.0, 4e-3]},
                                           "controllers.milling.initialisation": {"choices": ["z0"]}})
    assert "controllers.premeasurement.radius_m=0.005 is outside [0.001, 0.004]" in text
    assert "controllers.milling.traverse_speed_m_s=0.0 is outside (0, 0.05]" in text
    assert "controllers.milling.initialisation='z0' must be one of 'fitted', 'equal_height'" in text
    # a model that does not load is refused when the suite loads, not in every case at run time
    text = suite_errors(parameters__scene={"controllers.premeasurement.camera_model": {"choices": ["no_such_model"]}})
    assert ("controllers.premeasurement.camera_model='no_such_model' must be \"estimate\", a preset "
            "(controllers/camera_models) or a readable camera-model file (no camera model named 'no_such_model'") in text


def test_the_jobs_take_no_copy_of_a_controller_setting():
    """One source for each quantity: no job parameter repeats a [controllers] field (the same name
    in another unit, e.g. radius_mm for radius_m, counts as a copy)."""
    from controllers.settings import ControllerSettings

    def quantity(name: str) -> str:
        return re.sub(r"_(mm_s|m_s|mm|um|m|px|deg|rad|rpm|s)$", "", name)

    controller = {quantity(name) for table in ControllerSettings.model_fields.values()
                  for name in table.annotation.model_fields}
    assert {"radius", "traverse_speed", "camera_model", "initialisation"} <= controller
    for job, entry in JOBS.items():
        assert not {quantity(p) for p in entry.parameters} & controller, job


def test_camera_model_file_is_accepted_by_path():
    raw = copy.deepcopy(RAW_SUITES["calibration.toml"])
    raw["parameters"]["scene"]["controllers.premeasurement.camera_model"] = {
        "choices": [str(ROOT / "controllers/camera_models/paper.toml")]}
    suite_from_dict(raw)


def test_aggregates_fit_the_metric_kind():
    text = suite_errors(metrics__milling_time_min__aggregate="proportion", metrics__breaches__aggregate="proportion",
                        metrics__success__aggregate="average")
    assert ("metrics.milling_time_min.aggregate='proportion': milling_time_min is a continuous metric; allowed: "
            "mean, median, max, min, p95") in text
    assert "metrics.breaches.aggregate='proportion': breaches is a count metric" in text
    assert "metrics.success.aggregate='average' must be one of 'mean', 'median', 'max', 'min', 'p95', 'proportion'" \
        in text
    for job in JOBS.values():
        for name in ("success", "detachable", "breached", "complete", "trajectory_found", "tip_on_drill"):
            if name in job.metrics:
                assert job.metrics[name] == "binary"


def test_thresholds():
    text = suite_errors(thresholds__success={"min": 0.9, "max": 0.5}, thresholds__breaches={},
                        thresholds__nothing={"max": 1.0}, thresholds__peak_force_n={"max": float("inf")})
    assert "thresholds.success.min=0.9 exceeds thresholds.success.max=0.5" in text
    assert "thresholds.breaches.min=None must be given (min and/or max)" in text
    assert "thresholds.nothing: no such metric in [metrics]" in text
    assert "thresholds.peak_force_n.max=inf must be a finite number" in text


def test_cli_exits_2_naming_the_fields(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('[suite]\nname = "../escape"\njob = "milling"\nseed = 1\ncases = 1\n'
                 '[parameters.scene]\n"controllers.premeasurement.radius_m" = { uniform = [1e-3, 9e-3] }\n'
                 '[metrics.milling_time_min]\naggregate = "proportion"\n')
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "suite.name='../escape'" in err
    assert "controllers.premeasurement.radius_m=0.009 is outside [0.001, 0.004]" in err
    assert "milling_time_min is a continuous metric" in err


@pytest.mark.parametrize("args", [["--cases", "0"], ["--cases", "100001"], ["--cases", "x"], ["--workers", "0"],
                                  ["--workers", "2.5"]])
def test_cli_bounds_cases_and_workers(args, capsys):
    """Refused at parsing; a --workers above the cap is not refused but capped with a warning
    (tests/test_runner_robustness.py)."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "scenarios/twin_smoke.toml", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "must be an integer in [1, " in err


def test_settings_models_are_frozen_and_keyword_constructible():
    from controllers.milling import MillingSettings
    from controllers.premeasurement import PremeasurementSettings

    s = MillingSettings(initialisation="equal_height", traverse_speed_m_s=3e-3)
    assert s.damper.through_level == 0.99 and s.control.velocity_scale == 0.9
    p = PremeasurementSettings(camera_model="paper", radius_m=3e-3)
    assert p.grid_points_per_axis == (3, 3, 3) and isinstance(p.grid_points_per_axis, tuple)
    with pytest.raises(ValidationError, match="frozen"):
        p.radius_m = 1.0
