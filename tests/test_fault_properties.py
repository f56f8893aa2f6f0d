"""Faults as properties (issue 14 part 4): each fault kind of ``twin.faults.FaultSchedule`` really
fires in the twin, a stop under faults leaves the drill off and the arm holding (judged on ground
truth by ``scenarios.fault_injection.check_stop``, which can fail), the minimal resume, the
perception outliers, determinism, the job's bounds at suite load, and the hypothesis strategies."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import find, given, settings

from hw_bridge.backends.twin import TwinHardware
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Lifecycle
from scenarios.fault_injection import (HOLD_SPEED, KEYPOINT_OUTLIER_PX, MAX_FAULT_WAIT_S, CompletionOutliers,
                                       KeypointOutliers, check_stop, fault_schedule, resume_after_stop)
from scenarios.jobs import JOBS, MillingJobParams
from scenarios.testing.fault_strategies import FAULT_KINDS, FAULT_PARAMETERS, fault_bounds, faults, no_faults
from scenes.schema import ConfigError, load_toml
from scenes.spec import load_scene
from twin.faults import FaultSchedule, FaultWindow
from twin.world import TwinWorld

FAST = {"control.period_s": 0.02}


def _world(schedule: FaultSchedule) -> TwinWorld:
    world = TwinWorld(load_scene("default", FAST), 0)
    world.set_fault_schedule(schedule)
    return world


def _cutting(schedule: FaultSchedule) -> TwinHardware:
    """An active twin with ``schedule``, the drill on (the cut, and the schedule's clock, start)."""
    hw = TwinHardware(load_scene("default", FAST), 0)
    hw.configure()
    hw.ground_truth.set_fault_schedule(schedule)
    hw.activate()
    hw.set_drill(True, 0.5 * hw.rig.drill.max_speed_rpm)
    return hw


def _hold_until_stopped(hw: TwinHardware, max_s: float = 5.0) -> str:
    """Command the current position every period until the safety layer stops the run; its reason."""
    q = hw.read().position
    while hw.now() < max_s:
        try:
            hw.write(q)
            hw.advance()
            hw.read()
        except HardwareError:
            assert hw.state is Lifecycle.INACTIVE
            return hw.fault
    raise AssertionError(f"no safety stop within {max_s} s")


def test_dropped_frames_fraction_measured_over_a_run_is_the_requested_one():
    world = _world(FaultSchedule(dropped_frame_fraction=0.2, seed=3))
    delivered = set()
    for _ in range(1500):                  # 30 s: ~900 exposures at 30 Hz
        world.step()
        f = world.latest_frame()
        if f is not None:
            delivered.add(f.index)
    exposures = max(delivered) + 1
    assert 1.0 - len(delivered) / exposures == pytest.approx(0.2, abs=0.05)
    assert "dropped_frames" in world.faults_fired


def test_image_latency_shows_in_the_frame_stamps():
    latency = 0.08
    world = _world(FaultSchedule(image_latency_s=latency))
    cams = world.scene.sensors.cameras
    ages = []
    for _ in range(200):
        world.step()
        f = world.latest_frame()
        if f is not None:
            ages.append(world.time_s - f.stamp_s)
    assert min(ages) >= cams.delay_s + latency - 1e-9
    assert max(ages) <= cams.delay_s + latency + 1.0 / cams.rate_hz + world.period_s + 1e-9
    assert world.faults_fired == {"image_latency"}


def test_joint_state_delay_window_shows_in_the_stamps_only_while_it_lasts():
    world = _world(FaultSchedule(joint_state_delay_s=0.05, joint_state_delay=FaultWindow(0.2, 0.4)))
    world.drill_on = True                 # the cut (and the schedule's clock) starts
    ages = {}
    for _ in range(50):
        world.step()
        ages[round(world.time_s - world.cut_start_s, 2)] = world.time_s - world.latest_joint_sample().stamp_s
    assert ages[0.1] < 0.01 and ages[0.8] < 0.01
    assert 0.05 - 1e-9 <= ages[0.4] <= 0.05 + world.period_s + 1e-9     # sampled once a period
    assert world.faults_fired == {"joint_state_delay"}


def test_a_freeze_mid_cut_makes_joint_states_stale_and_stops_the_run_safely():
    hw = _cutting(FaultSchedule(joint_state_freeze=FaultWindow(0.2, 1.0)))
    try:
        reason = _hold_until_stopped(hw)
        assert "stale" in reason
        check = check_stop(hw, safety_stop=True)
        assert not check.unsafe and not check.drill_on and check.max_joint_speed <= HOLD_SPEED
        assert check.drill_on_after_stop_s == 0.0      # the safe stop reached the twin at once
        resume = resume_after_stop(hw, np.array([0.0, 0.0, 1.0]), 1e-3)
        assert resume.possible and resume.ok, resume.message
    finally:
        hw.close()


def test_a_lost_connection_mid_cut_stops_with_the_drill_off_and_the_arm_holding_once_it_is_back():
    hw = _cutting(FaultSchedule(disconnect=FaultWindow(0.2, 1.0)))
    gt = hw.ground_truth
    try:
        reason = _hold_until_stopped(hw)
        assert "connection lost" in reason
        assert gt.drill_on                     # the stop cannot reach the robot while it does not answer
        check = check_stop(hw, safety_stop=True)
        assert not check.unsafe, check
        assert check.drill_on_after_stop_s == pytest.approx(1.0, abs=0.1)   # until the connection came back
        resume = resume_after_stop(hw, np.array([0.0, 0.0, 1.0]), 1e-3)
        assert resume.possible and resume.ok, resume.message
    finally:
        gt.set_fault_schedule(None)
        hw.close()


def test_a_permanently_lost_connection_leaves_the_drill_on_and_is_flagged_unsafe():
    """The twin models no drill-side interlock: nothing switches the drill off when the robot
    stops answering for good. The property says so instead of hiding it."""
    hw = _cutting(FaultSchedule(disconnect=FaultWindow(0.1, math.inf)))
    gt = hw.ground_truth
    try:
        assert "connection lost" in _hold_until_stopped(hw)
        check = check_stop(hw, safety_stop=True)
        assert check.unsafe and check.drill_on
        assert check.waited_s == pytest.approx(MAX_FAULT_WAIT_S, abs=0.05)
        resume = resume_after_stop(hw, np.array([0.0, 0.0, 1.0]), 1e-3)
        assert not resume.possible and not resume.ok
    finally:
        gt.set_fault_schedule(None)
        hw.close()


def test_unsafe_stop_is_able_to_fail():
    hw = _cutting(FaultSchedule(joint_state_freeze=FaultWindow(0.1, 0.5)))
    try:
        _hold_until_stopped(hw)
        hw.ground_truth.drill_on = True        # deliberately left on after the stop
        check = check_stop(hw, safety_stop=True)
        assert check.drill_on and check.unsafe
    finally:
        hw.close()
    hw = _cutting(FaultSchedule())
    try:                                       # "stopped" by the safety layer, but the interface stayed active
        check = check_stop(hw, safety_stop=True)
        assert check.active and check.unsafe
    finally:
        hw.close()


def test_the_schedule_is_deterministic_for_a_seed():
    params = {**JOBS["milling"].parameters, "fault_dropped_frames": 0.1, "fault_disconnect_start_s": 3.0,
              "fault_disconnect_permanent": True}
    a, b = fault_schedule(params, 7), fault_schedule(params, 7)
    assert a == b and a.disconnect == FaultWindow(3.0, math.inf)
    drops = [a.frame_dropped(k) for k in range(2000)]
    assert drops == [b.frame_dropped(k) for k in range(2000)]
    assert drops != [fault_schedule(params, 8).frame_dropped(k) for k in range(2000)]
    assert fault_schedule(JOBS["milling"].parameters, 7).windows == {}      # the defaults: no fault


def test_a_window_refuses_a_negative_start_or_an_empty_duration():
    with pytest.raises(ValueError, match=r"start_s=-1.0"):
        FaultWindow(-1.0, 1.0)
    with pytest.raises(ValueError, match=r"duration_s=0.0"):
        FaultWindow(1.0, 0.0)


def test_completion_outliers_replace_the_requested_fraction_with_wild_values():
    class Half:
        uses_images = False

        def estimate(self, frame, probes_r, T_tool_to_r):
            return np.full(probes_r.shape[0], 0.5)

    sensor = CompletionOutliers(Half(), 0.1, np.random.default_rng(0))
    c = np.concatenate([sensor.estimate(None, np.zeros((32, 3, 3)), np.eye(4)) for _ in range(200)])
    wild = c != 0.5
    assert wild.mean() == pytest.approx(0.1, abs=0.02) and sensor.outliers == wild.sum()
    assert set(np.unique(c[wild])) == {0.0, 1.0}


def test_keypoint_outliers_move_detections_by_tens_of_pixels():
    from controllers.perception.keypoint_detector import Keypoint

    class Fixed:
        config = None

        def detect(self, image):
            return [Keypoint("tip", True, np.array([100.0, 200.0]), 0.9), Keypoint("other", False, None, 0.0)]

    det = KeypointOutliers(Fixed(), 0.1, np.random.default_rng(1))
    moved = []
    for _ in range(1000):
        found, missing = det.detect(None)
        assert missing.xy_px is None
        moved.append(np.linalg.norm(found.xy_px - [100.0, 200.0]))
    moved = np.array(moved)
    assert (moved > 0).mean() == pytest.approx(0.1, abs=0.03)
    assert KEYPOINT_OUTLIER_PX[0] - 1e-9 <= moved[moved > 0].min() and moved.max() <= KEYPOINT_OUTLIER_PX[1] + 1e-9


@pytest.mark.parametrize("name, value", [("fault_dropped_frames", [0.0, 0.3]), ("fault_image_latency_s", [0.0, 0.2]),
                                         ("fault_completion_outliers", [-0.1, 0.05])])
def test_suite_load_refuses_a_fault_range_outside_the_bounds(name, value):
    from scenarios.suite import suite_from_dict

    raw = load_toml("scenarios/milling_faults.toml")
    raw["parameters"]["job"][name] = {"uniform": value}
    with pytest.raises(ConfigError) as err:
        suite_from_dict(raw, "milling_faults.toml")
    text = str(err.value)
    lo, hi = fault_bounds(name)
    assert name in text and f"{hi:g}" in text, text


def test_the_fault_suite_loads_with_every_kind_and_no_fault_among_its_choices():
    from scenarios.suite import load_suite

    suite = load_suite("scenarios/milling_faults.toml")
    assert suite.cases == 1000 and suite.job == "milling"
    for name in FAULT_PARAMETERS:
        assert name in suite.job_parameters, name


@settings(max_examples=200, deadline=None)
@given(faults())
def test_fault_strategies_stay_within_the_job_bounds(drawn):
    assert set(drawn) == set(FAULT_PARAMETERS)
    MillingJobParams(**drawn)                  # the job's own validation
    for name, value in drawn.items():
        if not isinstance(value, bool):
            lo, hi = fault_bounds(name)
            assert lo <= value <= hi


def test_fault_strategies_shrink_towards_no_fault():
    assert find(faults(), lambda d: True) == no_faults()
    minimal = find(faults(), lambda d: d["fault_disconnect_permanent"])
    assert {k for k, v in minimal.items() if v != no_faults()[k]} == {"fault_disconnect_permanent"}
    with pytest.raises(ValueError, match="unknown fault kind"):
        faults(["meteor"])
    assert set(FAULT_KINDS) >= {"dropped_frames", "disconnect"}


def test_a_milling_case_with_a_lost_connection_mid_cut_is_stopped_held_and_resumed(tmp_path):
    """One whole case of the fault suite's job (oracle perception), a 1 s disconnection 5 s into the cut."""
    import dataclasses

    from scenarios.cases import make_cases, run_case
    from scenarios.suite import load_suite

    suite = load_suite("scenarios/milling_faults.toml")
    ctx = make_cases(suite, 1, suite.seed, tmp_path, n_artifact_cases=0)[0]
    params = {**ctx.job_parameters, **no_faults(), "fault_disconnect_start_s": 5.0, "fault_disconnect_duration_s": 1.0}
    res = run_case(suite.job, dataclasses.replace(ctx, job_parameters=params))
    assert res.error is None, res.error
    m = res.metrics
    assert res.notes["faults_fired"] == ["disconnect"] and "connection lost" in res.notes["stop"]
    assert (m["stopped"], m["fault_stops"], m["unsafe_stop"], m["resumed"], m["resume_failed"]) == (1, 1, 0, 1, 0)
    assert m["breaches"] == 0 and m["drill_on_after_stop_s"] == pytest.approx(1.0, abs=0.1)
