"""The testing library: strategies draw scenes the loader accepts and shrink to the default scene;
the pytest plugin is registered through pytest11 and its worked example runs (CI runs it here)."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from hypothesis import find, given, settings

from scenarios.jobs import JOBS
from scenarios.testing.strategies import (SCENE_GROUPS, perception_errors, physics, rigs, scene_default,
                                          scene_overrides, skulls)
from scenes.spec import load_scene

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {"skulls": skulls, "rigs": rigs, "physics": physics}


@settings(max_examples=25, deadline=None)
@given(overrides=scene_overrides())
def test_every_drawn_scene_loads(overrides):
    scene = load_scene(None, overrides)
    assert scene.skull.params["thickness_min_m"] <= scene.skull.params["thickness_max_m"]


@settings(max_examples=25, deadline=None)
@given(params=perception_errors())
def test_drawn_perception_errors_are_valid_job_parameters(params):
    JOBS["milling"].params_model.model_validate({**JOBS["milling"].parameters, **params})
    assert params["perception"] == "oracle"


def test_each_strategy_shrinks_to_the_default_scene():
    for name, strategy in STRATEGIES.items():
        minimal = find(strategy(), lambda d: True)
        assert minimal and all(v == scene_default(k) for k, v in minimal.items()), name
    # a failure that needs one field shrinks to that field alone away from the default
    minimal = find(skulls(), lambda d: d["skull.thickness_min_mm"] > 0.3)
    assert [k for k, v in minimal.items() if v != scene_default(k)] == ["skull.thickness_min_mm"]
    assert find(perception_errors(), lambda d: True)["oracle_mae"] == JOBS["milling"].parameters["oracle_mae"]


def test_ranges_come_from_the_suites_and_stay_in_the_schema():
    drawn = [find(physics(), lambda d, k=k: d[k] != scene_default(k)) for k in ("milling.cut_rate_um_s",)]
    assert 150.0 <= drawn[0]["milling.cut_rate_um_s"] <= 1200.0          # sensitivity.toml's levels
    assert set(SCENE_GROUPS) >= {"skull", "rig", "physics"}


def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"micromill": "scenarios.testing.plugin"}


def test_the_worked_example_runs():
    """examples/test_property_example.py through the plugin: 2 fits and 1 oracle window on skulls(), 1 session."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "scenarios.testing.plugin", "-p",
                           "no:cacheprovider", str(ROOT / "examples" / "test_property_example.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout
