"""Scene and suite files: valid ones load, bad ones give every error with field names."""
import copy
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scenes.schema import ConfigError
from scenes.spec import DEFAULT_SCENE, load_scene, scene_from_dict
from scenarios.suite import load_suite, suite_from_dict

SMOKE = "scenarios/twin_smoke.toml"
RAW_SCENE = tomllib.loads(DEFAULT_SCENE.read_text())
with open(SMOKE, "rb") as fh:
    RAW_SUITE = tomllib.load(fh)


def test_default_scene_and_smoke_suite_load():
    s = load_scene()
    assert s.calibration_targets_r().shape == (5, 3)
    suite = load_suite(SMOKE)
    assert suite.cases >= 1 and "tip_reprojection_error_px" in suite.metrics


def test_all_scene_errors_reported_with_field_names():
    raw = copy.deepcopy(RAW_SCENE)
    raw["skull"]["thickness_min_mm"] = -3
    raw["mscs"]["width_px"] = "wide"
    raw["drill"]["burr_radius_mm"] = float("nan")
    raw["lighting"]["colour"] = "red"
    with pytest.raises(ConfigError) as exc:
        scene_from_dict(raw)
    text = str(exc.value)
    for name in ("skull.thickness_min_mm=-3", "mscs.width_px='wide'", "drill.burr_radius_mm=nan",
                 "lighting.colour is not a known field"):
        assert name in text
    assert len(exc.value.errors) == 4


def test_scene_override_of_unknown_field_is_an_error():
    with pytest.raises(ConfigError, match="no field 'thickness'"):
        load_scene(overrides={"skull.thickness": 1})


def test_suite_errors_name_fields():
    raw = copy.deepcopy(RAW_SUITE)
    raw["suite"]["backend"] = "gazebo"
    raw["suite"]["cases"] = 0
    raw["parameters"]["scene"]["skull.unevenness_amplitude_mm"] = {"uniform": [0.0, 9.0]}
    raw["parameters"]["job"]["speed"] = {"uniform": [0, 1]}
    raw["thresholds"]["nonexistent"] = {"max": 1}
    with pytest.raises(ConfigError) as exc:
        suite_from_dict(raw)
    text = str(exc.value)
    for name in ("suite.backend='gazebo'", "suite.cases=0", "skull.unevenness_amplitude_mm=9.0",
                 'parameters.job."speed"', "thresholds.nonexistent"):
        assert name in text


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


def _mutations(raw):
    paths = []
    for k, v in raw.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, dict):
                    paths += [(k, k2, k3) for k3 in v2]
                else:
                    paths.append((k, k2))
    return paths


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_bad_suites_give_clear_errors(data):
    raw = copy.deepcopy(RAW_SUITE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_mutations(raw) or [("suite",)]))
        node = raw
        for p in path[:-1]:
            node = node[p] if isinstance(node.get(p), dict) else node
        node[path[-1]] = data.draw(json_values)
    try:
        suite_from_dict(raw, "random.toml")
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_bad_scenes_give_clear_errors(data):
    raw = copy.deepcopy(RAW_SCENE)
    path = data.draw(st.sampled_from(_mutations(raw)))
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = data.draw(json_values)
    try:
        scene_from_dict(raw, "random.toml")
    except ConfigError as exc:
        assert exc.errors


def test_bad_toml_syntax(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[suite\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(f)
