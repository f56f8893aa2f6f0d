"""A worked example of property-based testing with micromill (docs/property_testing.md).

In your own repository, with micromill installed, the plugin's fixtures are there without any
import (the ``pytest11`` entry point); here: ``pytest -p scenarios.testing.plugin examples/``.
tests/test_property_plugin.py runs this file in CI. It is kept small (a few examples, the SIM-ONLY
completion oracle): each fit costs a few seconds, the window tens of seconds, the rig's calibration
once for the session. ``derandomize=True`` keeps CI's examples the same from run to run; drop it
and raise ``max_examples`` for a real search.
"""
from hypothesis import given, settings

from scenarios.testing.strategies import perception_errors, skulls


@settings(max_examples=2, deadline=None, database=None, derandomize=True)
@given(skull=skulls())
def test_the_fit_finds_a_trajectory_on_any_skull(fitted_trajectory, skull):
    """The pre-measurement fits a milling trajectory on every plausible skull."""
    result = fitted_trajectory(skull)
    assert result.trajectory is not None, result.surface.failure


@settings(max_examples=1, deadline=None, database=None, derandomize=True)
@given(skull=skulls(), perception=perception_errors().map(lambda p: {**p, "oracle_mae": 0.0}))
def test_my_planner_never_breaches(twin_window, skull, perception):
    """With perfect completion sensing the shipped controller never breaches the membrane."""
    outcome = twin_window(skull, job=perception)
    assert outcome.holds("breaches == 0"), outcome.notes.get("why")


def test_a_twin_session_holds_the_arm_where_asked(twin_session):
    """The lower-level fixture: an active twin session on a scene of your choosing."""
    with twin_session({"skull.seed": 3}) as session:
        home = session.loop.state.position.copy()
        session.loop.hold(0.1)
        assert abs(session.loop.state.position - home).max() < 1e-3
