"""Every stop of ``micromill demo``, whatever raised it, ends with the drill off, the arm holding,
a ``STOPPED:`` line naming the cause, what was computed saved and a documented exit code; bad
input is refused (exit 2, one line) before anything connects; a dry run checks the link instead
of winding the controllers up against a robot that does not move (issue 16 items 1, 5 and 8)."""
import json
import re

import numpy as np
import pytest
import torch

import scenarios.demo as demo
from controllers.calibration import CalibrationError
from hw_bridge.backends.mock import MockHardware
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Lifecycle
from scenarios.cli import main
from scenes.spec import load_scene
from event_recorder import EventRecorder


def _raising_window(exc: BaseException):
    """A ``run_window`` whose controller switches the drill on, moves, then raises ``exc``."""
    def run_window(session, networks, settings, **kwargs):
        hw = session.loop.hw
        hw.set_drill(True, 1000.0)
        hw.write(hw.read().position)
        hw.advance()
        assert hw.drill_state().on
        raise exc
    return run_window


@pytest.mark.parametrize("exc, code, cause", [
    (CalibrationError("need at least 6 keypoint pairs, got 2"), 5,
     "CalibrationError: need at least 6 keypoint pairs, got 2"),
    (KeyboardInterrupt(), 130, "KeyboardInterrupt: interrupted by the operator (Ctrl-C)"),
])
def test_a_controller_error_stops_the_robot_and_saves_the_summary(tmp_path, monkeypatch, exc, code, cause):
    """Fails before the fix: the exception escaped run_demo as a traceback, no summary.json."""
    monkeypatch.setattr(demo, "run_window", _raising_window(exc))
    rec = EventRecorder()
    hw = MockHardware(load_scene(None, {"control.period_s": 0.02}), 0, recorder=rec)
    summary = demo.run_demo(tmp_path, load_scene(None, {"control.period_s": 0.02}), hw=hw)
    assert summary["exit_code"] == demo.demo_exit_code(summary) == code
    assert summary["stopped_by"] == cause and hw.fault == cause
    assert not hw.drill_state().on and hw.state is Lifecycle.FINALIZED and rec.closed
    assert ("safety_stop", cause) in rec.events                 # the cause is in the recording too
    assert summary["error"]["type"] == type(exc).__name__ and not summary["ok"]
    assert json.loads((tmp_path / "summary.json").read_text())["exit_code"] == code
    assert "Traceback" in (tmp_path / "error.txt").read_text()
    assert summary["files"] == ["error.txt", "summary.json"]
    text = demo.format_summary(summary)
    assert text.splitlines()[0].startswith(f"STOPPED: {cause}") and "Traceback" not in text
    assert f"exit status {code}" in text and f"wrote in {tmp_path}: error.txt, summary.json" in text


def test_an_error_after_calibration_keeps_the_calibration(tmp_path, monkeypatch, capsys):
    """The fit stage raises (a controller bug): the calibration's outputs stay, the summary holds
    them, the console shows a STOPPED: line and no traceback; exit 5."""
    import controllers.pipeline as pipeline

    def broken_fit(*args, **kwargs):
        raise ValueError("fit broke")
    monkeypatch.setattr(pipeline, "fit_window_trajectory", broken_fit)
    assert main(["demo", "--until", "fit", "--out", str(tmp_path)]) == demo.EXIT_CONTROLLER_ERROR
    out = capsys.readouterr().out
    assert "STOPPED: ValueError: fit broke" in out and "Traceback" not in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["calibration"]["rms_mm"] < 0.15 and summary["trajectory"] is None
    assert summary["files"] == ["camera_model.toml", "calibration.png", "error.txt", "summary.json"]
    assert f"wrote in {tmp_path}: camera_model.toml, calibration.png, error.txt, summary.json" in out
    assert not (tmp_path / "trajectory.png").exists()


@pytest.fixture
def bad_weights(tmp_path, monkeypatch):
    """Shipped weights replaced by a folder of copies that a test may damage."""
    from controllers.perception import weights_io

    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("drill_tip", "cranial", "completion", "thickness_loop"):
        (folder / f"{name}.pt").write_bytes((weights_io.WEIGHTS_DIR / f"{name}.pt").read_bytes())
    monkeypatch.setattr(weights_io, "WEIGHTS_DIR", folder)
    return folder


def _nan_weights(path):
    blob = torch.load(str(path), weights_only=True)
    state = blob["fine"]["state"]
    state[next(iter(state))].fill_(float("nan"))
    torch.save(blob, str(path))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), r"keypoint weights not found: .*cranial\.pt \(train them with"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), r"cranial\.pt: not a readable weights file"),
    (_nan_weights, r"cranial\.pt: tensor 'fine\.state\..*' holds NaN or inf"),
])
def test_bad_weights_are_refused_before_anything_connects(tmp_path, bad_weights, capsys, damage, message):
    """Fails before the fix: the cause was hidden behind "RuntimeError: twin: configure() first"
    (missing, truncated) or surfaced much later as "need at least 6 keypoint pairs, got 0" (NaN)."""
    damage(bad_weights / "cranial.pt")
    rec = tmp_path / "run.mcap"
    assert main(["demo", "--out", str(tmp_path / "out"), "--record", str(rec)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err)
    assert not rec.exists() and not (tmp_path / "out").exists()   # refused before anything was recorded or made


def test_an_unwritable_output_folder_is_refused_before_anything_connects(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "sub"
    assert main(["demo", "--out", str(out), "--record", str(tmp_path / "run.mcap")]) == 2
    err = capsys.readouterr().err
    assert f"output folder {out}: cannot be written" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run.mcap").exists()


def test_a_given_hardware_is_closed_when_the_input_is_refused(tmp_path):
    (tmp_path / "file.txt").write_text("")
    hw = MockHardware(load_scene(None), 0)
    with pytest.raises(demo.DemoInputError, match="cannot be written"):
        demo.run_demo(tmp_path / "file.txt" / "sub", load_scene(None), hw=hw)
    assert hw.state is Lifecycle.FINALIZED


@pytest.fixture(scope="module")
def coppeliasim_peer():
    from hw_bridge.test_peers.coppeliasim_server import start_test_server

    with start_test_server(None, {"control.period_s": 0.02}, seed=0) as srv:
        yield srv


@pytest.mark.parametrize("simulation", ["stopped", "running"])
def test_a_dry_run_checks_the_link_and_stops_cleanly(tmp_path, coppeliasim_peer, simulation):
    """CoppeliaSim, not armed: configure, joint states (activated and watched over 10 periods when
    the owner's simulation runs; one reading when it is stopped, which a dry run may not start), a
    stereo frame and the CNNs on it, then a clean stop saying so; nothing is sent. Fails before
    the fix: the window ran against a still robot and ended in a workspace-box safety stop (exit 3)
    after 0.29 s; against a stopped simulation, in a stale-joint-state stop."""
    scene = load_scene(None, coppeliasim_peer.scene_overrides)
    sent = coppeliasim_peer.report()["calls"].get("sim.setJointTargetPosition", 0)
    if simulation == "running":
        coppeliasim_peer.run_free()           # another client's simulation, advancing on its own
    try:
        summary = demo.run_demo(tmp_path, scene, backend="coppeliasim", armed=False)
    finally:
        if simulation == "running":
            from coppeliasim_zmqremoteapi_client import RemoteAPIClient

            sim = RemoteAPIClient("127.0.0.1", coppeliasim_peer.rpc_port).require("sim")
            sim.stopSimulation()
    assert summary["exit_code"] == 0 and summary["ok"] and summary["stopped_by"] is None
    assert summary["safety_fault"] is None and summary["calibration"] is None
    dry = summary["dry_run"]
    expected = (["configure", "activate", "joint states"] if simulation == "running"
                else ["configure", "joint states"])
    assert dry["passed"] and [c["name"] for c in dry["checks"]][:len(expected)] == expected
    assert (simulation == "stopped") == any("simulation is stopped" in n for n in dry["notes"])
    assert coppeliasim_peer.report()["calls"].get("sim.setJointTargetPosition", 0) == sent
    text = demo.format_summary(summary)
    assert "DRY RUN: link checks passed" in text and "--arm and safety.armed = true" in text
    assert "STOPPED" not in text and summary["files"] == ["summary.json"]
    if dry["frame"] is not None:              # the peer's vision sensors render the twin: the CNNs read them
        assert dry["checks"][len(expected)]["name"] == "stereo frame"
        assert set(dry["perception"]["left"]) == {"drill_tip", "bregma", "lambda"}
        assert "perception on that frame: left: drill_tip" in text
    else:                                     # a dry run that adds no vision sensors: said, not failed
        assert "could not be checked" in text


def test_a_dry_run_without_cameras_says_so_and_passes(tmp_path, monkeypatch):
    """The link checks on a backend that moves a real robot but has no cameras: passed, with a note."""
    class _RealMock(MockHardware):
        moves_real_robot = True               # a robot that really moves: unarmed, a dry run

    scene = load_scene(None, {"control.period_s": 0.02})
    hw = _RealMock(scene, 0)
    assert not hw.armed and not hw.has_cameras
    summary = demo.run_demo(tmp_path, scene, hw=hw)
    assert summary["exit_code"] == 0 and summary["dry_run"]["passed"] and summary["dry_run"]["frame"] is None
    assert "the mock backend has no stereo cameras configured" in demo.format_summary(summary)


def test_a_dry_run_whose_joint_states_fail_exits_3(tmp_path):
    """NaN joint states: the activation refuses (the watchdog), the check fails, exit 3."""
    class _RealMock(MockHardware):
        moves_real_robot = True

    scene = load_scene(None, {"control.period_s": 0.02})
    hw = _RealMock(scene, 0)
    hw.faults.inject("nan_joint_states")
    summary = demo.run_demo(tmp_path, scene, hw=hw)
    failed = [c for c in summary["dry_run"]["checks"] if not c["passed"]]
    assert summary["exit_code"] == 3 and failed[0]["name"] == "activate" and "non-finite" in failed[0]["detail"]
    assert "DRY RUN: link check failed: activate" in demo.format_summary(summary)


def test_a_hardware_that_never_configured_still_gives_a_summary(tmp_path, monkeypatch):
    """The twin's world fails to build in configure(): the cause is reported, not hidden behind
    "RuntimeError: twin: configure() first" (the twin has no clock before configure; the summary
    used to read it)."""
    import hw_bridge.backends.twin as twin_backend

    def broken_world(*args, **kwargs):
        raise OSError("pybullet: cannot connect to the physics server")
    monkeypatch.setattr(twin_backend, "TwinWorld", broken_world)
    summary = demo.run_demo(tmp_path, load_scene(None, {"control.period_s": 0.02}))
    assert summary["stopped_by"] == "OSError: pybullet: cannot connect to the physics server"
    assert summary["exit_code"] == 5 and summary["simulated_time_s"] == 0.0
    assert (tmp_path / "summary.json").exists()


def test_a_dry_run_whose_cameras_give_no_frame_says_so_and_passes(tmp_path):
    """Cameras configured but grabbing fails (a dry run that did not set the simulator's vision
    sensors up): reported with the error, not a failed link check."""
    from hw_bridge.errors import HardwareError

    class _NoSensors(MockHardware):
        moves_real_robot = True

        def _grab_stereo(self):
            raise HardwareError("vision sensor /mscs_left not found")

    scene = load_scene(None, {"control.period_s": 0.02})
    img = np.zeros((64, 64, 3), np.uint8)
    summary = demo.run_demo(tmp_path, scene, hw=_NoSensors(scene, 0, images=(img, img)))
    assert summary["exit_code"] == 0 and summary["dry_run"]["passed"]
    assert "no stereo frame from mock (HardwareError: vision sensor /mscs_left not found)" in \
        demo.format_summary(summary)


def test_a_failed_shutdown_is_reported_not_raised(tmp_path, monkeypatch):
    """``Hardware.close`` raises when a shutdown step fails (the drill did not confirm off): the
    demo still writes its summary, says SHUTDOWN FAILED and exits 3. Fails before the fix: the
    close error escaped run_demo and no summary.json was written."""
    class DrillStuck(MockHardware):
        def _set_drill(self, on, speed_rpm):
            if not on:
                raise HardwareError("drill controller does not answer")
            super()._set_drill(on, speed_rpm)

    monkeypatch.setattr(demo, "run_window", _raising_window(CalibrationError("too few tips")))
    scene = load_scene(None, {"control.period_s": 0.02})
    hw = DrillStuck(scene, 0)
    summary = demo.run_demo(tmp_path, scene, hw=hw)
    assert summary["shutdown_error"] and "DRILL MAY STILL BE ON" in summary["shutdown_error"]
    assert summary["exit_code"] == 3
    assert json.loads((tmp_path / "summary.json").read_text())["shutdown_error"] == summary["shutdown_error"]
    assert "SHUTDOWN FAILED" in demo.format_summary(summary)


def test_the_scene_chooses_the_weights(tmp_path, capsys):
    """``[controllers.perception]`` names the weights the demo loads (a lab's fine-tuned file):
    a missing file is refused at scene load naming the field; a file that holds NaN is refused
    before anything connects, naming that file (not the shipped one)."""
    from controllers.perception import weights_io
    from scenes.schema import ConfigError

    with pytest.raises(ConfigError, match=r"controllers\.perception\.cranial_weights=.*no weights file"):
        load_scene(None, {"controllers.perception.cranial_weights": str(tmp_path / "missing.pt")})
    mine = tmp_path / "lab_cranial.pt"
    mine.write_bytes((weights_io.WEIGHTS_DIR / "cranial.pt").read_bytes())
    _nan_weights(mine)
    scene_file = tmp_path / "lab.toml"
    default = (weights_io.WEIGHTS_DIR.parents[2] / "scenes" / "default.toml").read_text()
    scene_file.write_text(default + f'\n[controllers.perception]\ncranial_weights = "{mine}"\n')
    assert main(["demo", "--scene", str(scene_file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "lab_cranial.pt: tensor" in err and "NaN or inf" in err


def test_cameras_the_cnn_cannot_read_end_in_a_clean_stop_with_a_summary(tmp_path, capsys):
    """The first real run (issue 16): a robot whose images the keypoint CNN cannot read. Here the
    real calibration runs on a mock whose cameras show a flat grey image, so the CNN finds no tip
    and the rig characterisation raises CameraModelError for real (nothing monkeypatched; the
    issue's SAS run): the demo ends with the drill off, a STOPPED line naming the error,
    summary.json and exit 5. Fails before the fix: a raw CameraModelError traceback, no summary."""
    scene = load_scene(None, {"control.period_s": 0.02})
    grey = np.full((scene.mscs.height_px, scene.mscs.width_px, 3), 128, np.uint8)
    hw = MockHardware(scene, 0, images=(grey, grey.copy()))
    summary = demo.run_demo(tmp_path, scene, until="calibration", hw=hw)
    assert summary["exit_code"] == 5 and summary["error"]["type"] == "CameraModelError"
    assert summary["stopped_by"] == "CameraModelError: need at least 6 keypoint pairs, got 0"
    assert summary["calibration"] is None
    assert not hw.drill_state().on and hw.state is Lifecycle.FINALIZED
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["stopped_by"] == summary["stopped_by"]
    assert demo.format_summary(summary).startswith("STOPPED: CameraModelError: ")
