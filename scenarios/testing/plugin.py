"""The micromill pytest plugin: twin fixtures for property-based tests of a controller.

Installing micromill registers it (``[project.entry-points.pytest11] micromill`` in pyproject.toml);
without the install, ``pytest -p scenarios.testing.plugin``. A researcher writes, in their own
repository::

    from hypothesis import given, settings
    from scenarios.testing.strategies import skulls

    @settings(max_examples=20, deadline=None)
    @given(skull=skulls())
    def test_my_planner_never_breaches(twin_window, skull):
        assert twin_window(skull).metrics["breaches"] == 0

The fixtures are session-scoped factories (hypothesis calls a test many times with one set of
fixtures, so function-scoped ones would not be reset between examples anyway), each taking scene
overrides (dotted keys, as the strategies draw them) and built on the pipeline and the jobs a
suite runs, not on a second pipeline:

- ``twin_session(overrides=None, seed=0)``: a context manager giving an active twin session
  (``controllers.pipeline.Session``, its hardware ``session.loop.hw``); a test that raises inside it
  leaves the twin stopped with the cause (drill off, holding), as a suite case does;
- ``calibrated_rig(overrides=None, calibration_seed=0)``: the rig's calibration
  (``CalibrationOutcome``), computed once per rig and seed in the test process (the milling
  job's cache: only the rig's overrides count, skull overrides share it);
- ``fitted_trajectory(overrides=None, seed=0)``: calibrate (cached), then the fit stage on this
  scene: the ``WindowResult`` (``.trajectory``, ``.surface``; ``.trajectory`` None when the fit found none);
- ``twin_window(overrides=None, job=None, seed=0)``: a whole window, the suites' ``milling`` job
  (calibrate, fit, mill, judge with the twin's bone model); ``job`` overrides the job's parameters,
  whose default here is the SIM-ONLY completion oracle (``perception = "oracle"``, seconds per
  window instead of the CNN's minutes). Returns a ``WindowOutcome`` (``metrics``, ``notes``,
  ``holds(property)``); raises ``WindowError`` with the traceback when the case raised. Results are
  cached per (overrides, job, seed), so hypothesis replaying a failing example costs nothing.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: the job parameters ``twin_window`` starts from (over the milling job's defaults)
WINDOW_JOB_DEFAULTS = {"perception": "oracle"}


class WindowError(RuntimeError):
    """A ``twin_window`` case raised (a controller or pipeline error): the message ends with its traceback."""


@dataclass(frozen=True)
class WindowOutcome:
    """A milling window's metrics (``scenarios.jobs.JOBS["milling"].metrics``) and notes."""

    metrics: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)

    def holds(self, property_text: str) -> bool:
        """Whether the property (``scenarios.properties``) holds on these metrics."""
        from scenarios.jobs import JOBS
        from scenarios.properties import parse_property

        return parse_property(property_text, JOBS["milling"].metrics).holds(self.metrics)


def _context(tmp: Path, overrides: dict[str, Any] | None, job: dict[str, Any] | None, seed: int):
    from scenarios.cases import CaseContext
    from scenarios.jobs import JOBS
    from scenes.spec import DEFAULT_SCENE

    params = {**JOBS["milling"].parameters, **WINDOW_JOB_DEFAULTS, **(job or {})}
    JOBS["milling"].params_model.model_validate(params)          # a bad parameter: pydantic names it
    return CaseContext("pytest", 0, seed, str(DEFAULT_SCENE), "twin", dict(overrides or {}), params, str(tmp),
                       False)


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=repr)


@pytest.fixture(scope="session")
def micromill_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the fixtures' artifacts (failure figures)."""
    return tmp_path_factory.mktemp("micromill")


@pytest.fixture(scope="session")
def twin_session(micromill_tmp: Path) -> Callable[..., Any]:
    """Factory: ``with twin_session(overrides, seed=0) as session:`` an active twin session."""
    from controllers.pipeline import open_session
    from scenarios.cases import case_session
    from scenes.spec import load_scene

    @contextmanager
    def open_twin(overrides: dict[str, Any] | None = None, seed: int = 0) -> Iterator[Any]:
        ctx = _context(micromill_tmp, overrides, None, seed)
        scene = load_scene(ctx.scene_path, ctx.scene_overrides)
        with case_session(ctx, scene) as hw:
            yield open_session(hw)
    return open_twin


@pytest.fixture(scope="session")
def calibrated_rig(micromill_tmp: Path) -> Callable[..., Any]:
    """Factory: ``calibrated_rig(overrides, calibration_seed=0)`` -> the rig's ``CalibrationOutcome`` (cached per rig)."""
    from scenarios.jobs.milling import _networks, _rig_calibration
    from scenes.spec import load_scene

    def calibrate(overrides: dict[str, Any] | None = None, calibration_seed: int = 0) -> Any:
        ctx = _context(micromill_tmp, overrides, {"calibration_seed": calibration_seed}, 0)
        scene = load_scene(ctx.scene_path, ctx.scene_overrides)
        return _rig_calibration(ctx, _networks(scene.controllers.perception, False))
    return calibrate


@pytest.fixture(scope="session")
def fitted_trajectory(micromill_tmp: Path, calibrated_rig: Callable[..., Any]) -> Callable[..., Any]:
    """Factory: ``fitted_trajectory(overrides, seed=0)`` -> the fit stage's ``WindowResult`` on that scene."""
    from controllers.pipeline import open_session, run_window
    from scenarios.cases import case_session
    from scenarios.jobs.milling import _networks
    from scenes.spec import load_scene

    cache: dict[str, Any] = {}

    def fit(overrides: dict[str, Any] | None = None, seed: int = 0) -> Any:
        key = _key(overrides, seed)
        if key not in cache:
            ctx = _context(micromill_tmp, overrides, None, seed)
            scene = load_scene(ctx.scene_path, ctx.scene_overrides)
            cal = calibrated_rig(overrides)
            with case_session(ctx, scene) as hw:
                cache[key] = run_window(open_session(hw), _networks(scene.controllers.perception, False),
                                        scene.controllers, until="fit", calibration=cal)
        return cache[key]
    return fit


@pytest.fixture(scope="session")
def twin_window(micromill_tmp: Path) -> Callable[..., WindowOutcome]:
    """Factory: ``twin_window(overrides, job=None, seed=0)`` -> the milling window's ``WindowOutcome``."""
    from scenarios.cases import run_case

    cache: dict[str, WindowOutcome] = {}

    def window(overrides: dict[str, Any] | None = None, job: dict[str, Any] | None = None,
               seed: int = 0) -> WindowOutcome:
        key = _key(overrides, job, seed)
        if key not in cache:
            res = run_case("milling", _context(micromill_tmp, overrides, job, seed))
            if res.error is not None:
                raise WindowError(f"the window raised (overrides {overrides}, job {job}, seed {seed}):\n{res.error}")
            cache[key] = WindowOutcome(res.metrics, res.notes)
        return cache[key]
    return window


__all__ = ["WINDOW_JOB_DEFAULTS", "WindowError", "WindowOutcome", "calibrated_rig", "fitted_trajectory",
           "twin_session", "twin_window"]
