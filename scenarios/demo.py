"""``micromill demo``: a whole autonomous cranial window on the default scene, through ``hw_bridge``.

1. Automatic calibration: the drill tip visits a 3x3x3 grid (rig characterisation, the
   stereo model is estimated) and the paper's five setpoints (landmark calibration); the
   keypoint CNN finds the tip in both images at every stop.
2. 3D surface fitting: the drill parks out of view, the cranial CNN finds bregma and lambda,
   SGBM reconstructs the skull around the window centre, and the 32-point initial trajectory
   is fitted and offset by rd + dd.
3. Milling: the drill switches on and circles the window while the completion CNN reads c_i at
   the 32 points and the planner lowers each point until it is through; then the drill stops
   and retracts.
4. Judgement (twin only, ground truth): flap detachable? membrane breached? times. A failed
   window's cause (``scenarios.failure.explain_failure``: which point, when, why) is printed
   with the verdict, saved in ``summary.json`` (``verdict``) and drawn in ``failure.png``.

Exit status (``demo_exit_code``; the CLI documents it): 0 the window succeeded (without a twin:
the pipeline reached its own stop; a dry run: the link checks passed); 1 the twin's verdict is
FAILURE; 3 a hardware or safety stop ended the run (a dry run: a link check failed); 4 the
controller stopped without finishing (no trajectory, milling timeout or perception lost); 5 a
controller raised an error (e.g. ``CalibrationError``; the traceback is in ``error.txt``);
130 the operator pressed Ctrl-C. Bad input found before the hardware is opened (weights
missing, unreadable or non-finite; an output folder that cannot be written) raises
``DetectorLoadError`` / ``DemoInputError`` instead (the CLI: exit 2, one line).

Every stop, whatever raised it, ends the same way: the interface is stopped safely
(``Hardware.stop``: drill off, holding the last command, deactivated) and closed, the stages
finished so far keep their outputs, ``stopped_by`` names the cause and ``summary.json`` is written.

The controllers run at 50 Hz (``control.period_s = 0.02`` for this run; the scene's default is
the robot driver's 1 kHz), which is what makes a whole window take about a minute of wall time.

The same pipeline runs on any backend (``--backend coppeliasim|sas``; a robot that really moves
needs ``--arm`` and ``safety.armed = true``, else it is a dry run: the link checks of
``scenarios.dry_run`` instead of the window, as nothing moves), can stop after a stage
(``--until calibration|fit``), and can be recorded (``--record run.mcap``) and replayed offline
(``micromill replay run.mcap``: ``run_demo`` on the ``replay`` backend).

Writes to the output folder: ``camera_model.toml`` (the estimated model), ``calibration.png``
(residuals per grid point and per setpoint), ``trajectory.png`` (keypoints and trajectory on
the left image), ``milling.png`` (c_i(t), h_i(t) and the final groove), ``failure.png`` (twin
only, a failed window: the failing point and its neighbours before the failure), ``milled.png``
(the left camera's last view of the window), ``error.txt`` (the traceback of an error that
stopped the run), ``summary.json``; each only when its stage got that far (``summary["files"]``
lists what this run wrote).
"""
from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from controllers.pipeline import (STAGES, Networks, WindowResult, completion_sensor, load_networks, open_session,
                                  run_window)
from controllers.reconstruction import save_camera_model
from controllers.settings import PerceptionSettings
from hw_bridge.errors import HardwareError, stop_cause
from hw_bridge.interface import Hardware, Lifecycle
from hw_bridge.registry import make_hardware
from scenes.spec import SceneSpec, load_scene
from scenarios.jobs.milling import milling_figure
from scenarios.jobs.premeasurement_common import new_figure, save_figure
from scenarios.dry_run import describe as describe_dry_run, link_checks
from scenarios.failure import explain_run
from scenarios.scoring import ScoredSensor, score_fit_heights, score_milling

DEMO_CONTROL_PERIOD_S = 0.02

#: ``micromill demo`` exit statuses (``demo_exit_code``)
EXIT_SUCCESS = 0
EXIT_WINDOW_FAILED = 1
EXIT_HARDWARE_STOP = 3
EXIT_UNFINISHED = 4
EXIT_CONTROLLER_ERROR = 5
EXIT_INTERRUPTED = 130        # 128 + SIGINT, as for `micromill run`


class DemoInputError(ValueError):
    """Input the demo cannot use (an output folder that cannot be written), found before the
    hardware is opened."""


def demo_exit_code(summary: dict) -> int:
    """The demo's exit status from its summary, first match wins:

    - 3 (``EXIT_HARDWARE_STOP``): a shutdown step failed when the hardware was closed
      (``shutdown_error``; e.g. the drill did not confirm off): a person must look at the robot;
    - 130 (``EXIT_INTERRUPTED``): the operator pressed Ctrl-C (the hardware was stopped safely
      and what was computed is saved);
    - 5 (``EXIT_CONTROLLER_ERROR``): an exception that is not a hardware stop ended the run, e.g.
      the calibration's ``CalibrationError`` when the keypoint CNN finds the tip in too few
      images (``error`` names it; the traceback is in ``error.txt``);
    - a dry run (a robot that really moves, not armed): 0 when the link checks passed, 3 when one
      failed (``dry_run``);
    - 1 (``EXIT_WINDOW_FAILED``): the twin's verdict is FAILURE (membrane breached or flap not
      detachable), whatever ended the run (the verdict's cause says what);
    - 3 (``EXIT_HARDWARE_STOP``): a hardware or safety stop ended the run (``stopped_by``, the
      interface's ``safety_fault``, or the milling loop's SAFETY_FAULT stop);
    - 4 (``EXIT_UNFINISHED``): the controller stopped without finishing the stage asked for (no
      trajectory fitted, or milling stopped by timeout or lost perception);
    - 0 (``EXIT_SUCCESS``): the pipeline reached its own stop and, on the twin, the window succeeded.

    Without a twin (another backend, a replay) there is no verdict: the status reflects the
    controller's stop only. Bad input never reaches a summary: ``run_demo`` raises before the
    hardware is opened (the CLI exits 2)."""
    if summary.get("shutdown_error"):
        return EXIT_HARDWARE_STOP
    error = summary.get("error")
    if error is not None:
        return EXIT_INTERRUPTED if error["type"] == "KeyboardInterrupt" else EXIT_CONTROLLER_ERROR
    if summary.get("dry_run") is not None:
        return EXIT_SUCCESS if summary["dry_run"]["passed"] else EXIT_HARDWARE_STOP
    if summary["window_success"] is False:
        return EXIT_WINDOW_FAILED
    milling = summary["milling"]
    if summary["stopped_by"] or summary["safety_fault"] or (milling is not None
                                                            and milling["stop_reason"] == "safety_fault"):
        return EXIT_HARDWARE_STOP
    return EXIT_SUCCESS if summary["ok"] else EXIT_UNFINISHED


def _calibration_plot(path: Path, cal) -> None:
    fig = new_figure((10, 3.2))
    axes = fig.subplots(1, 2)
    if cal.model_fit is not None:
        axes[0].bar(np.arange(len(cal.model_fit.residuals_m)), cal.model_fit.residuals_m * 1e3, color="#4477aa")
        axes[0].set_title(f"rig characterisation: residual per grid point (RMS {cal.model_fit.rms_m * 1e3:.3f} mm)",
                          fontsize=9)
    axes[0].set_xlabel("grid point")
    axes[0].set_ylabel("residual (mm)")
    r = cal.calibration.residuals_m * 1e3
    colours = ["#4477aa" if i else "#cc3311" for i in cal.calibration.inliers]
    axes[1].bar(np.arange(1, len(r) + 1), r, color=colours)
    axes[1].set_title(f"landmark calibration: residual per setpoint (RMS {cal.calibration.rms_m * 1e3:.3f} mm; "
                      f"red = rejected)", fontsize=9)
    axes[1].set_xlabel("setpoint")
    save_figure(fig, path)


def _mark(img: np.ndarray, xy, colour, label: str | None = None) -> None:
    p = tuple(int(round(v)) for v in xy)
    cv2.drawMarker(img, p, colour, cv2.MARKER_CROSS, 24, 1)
    if label:
        cv2.putText(img, label, (p[0] + 8, p[1] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)


def demo_scene(scene_path: str | None = None) -> tuple[SceneSpec, dict]:
    """The demo's scene (the file, at the demo's 50 Hz control rate) and the overrides applied."""
    overrides = {"control.period_s": DEMO_CONTROL_PERIOD_S}
    return load_scene(scene_path, overrides), overrides


def prepare_demo(out_dir: Path, perception: PerceptionSettings) -> Networks:
    """Check the demo's input before any hardware is opened and return the loaded networks: the
    three networks must load (``weights_io.read_weights``: ``DetectorLoadError`` for weights
    missing, unreadable, of another format or holding NaN/inf), then ``out_dir`` is created if
    missing and must take a file (``DemoInputError`` otherwise)."""
    networks = load_networks(perception)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise DemoInputError(f"output folder {out_dir}: cannot be written ({exc.strerror or exc}); give --out a "
                             f"folder that can be created and written") from None
    return networks


def run_demo(out_dir: Path, scene: SceneSpec, seed: int = 0, backend: str = "twin", *, armed: bool = False,
             recorder=None, until: str = "mill", hw: Hardware | None = None,
             networks: Networks | None = None) -> dict:
    """Run the pipeline (``controllers.pipeline.run_window``) through stage ``until`` (``STAGES``)
    on ``backend`` (or on the given, unconfigured ``hw``; it is closed at the end); write each
    stage's outputs as soon as it finishes and return the summary (also in ``summary.json``).

    ``networks``: loaded by ``prepare_demo`` (which also checks ``out_dir``) when not given; its
    errors are raised before the hardware is made (a given ``hw`` is closed first).

    On a robot that really moves but is not armed (a dry run) the window is not run: the link
    checks of ``scenarios.dry_run`` are, and ``dry_run`` holds their results.

    Whatever ends the run early (a hardware or safety stop, the end of a replayed recording, an
    exception raised by a controller, Ctrl-C) stops the interface safely (``Hardware.stop``: drill
    off, holding, deactivated) and closes it; what was computed before is kept, ``stopped_by``
    says why and, for an exception, ``error`` names it and ``error.txt`` holds its traceback.
    Nothing is re-raised: the exit status (``demo_exit_code``) tells the caller."""
    if until not in STAGES:
        raise ValueError(f"until={until!r}: allowed {', '.join(STAGES)}")
    out_dir = Path(out_dir)
    if networks is None:
        try:
            networks = prepare_demo(out_dir, scene.controllers.perception)
        except BaseException:
            if hw is not None:
                hw.close()
            elif recorder is not None:
                recorder.close()
            raise
    if hw is None:
        hw = make_hardware(backend, scene, seed, armed=armed, recorder=recorder)
    backend = hw.name
    dry = hw.moves_real_robot and not hw.armed
    t_wall = time.perf_counter()
    result = WindowResult()
    dry_run = None
    error = None
    shutdown_error = None
    truth = None
    verdict = None
    written: list[str] = []               # the files this run wrote into out_dir, in order
    has_truth = hasattr(type(hw), "ground_truth")     # twin only: scoring against the true skull and bone
    scored: ScoredSensor | None = None
    bars: dict[str, tqdm] = {}

    def wrote(name: str, ok: bool = True) -> None:
        if ok:
            written.append(name)

    try:
        def progress(stage: str, done: int, total: int, detail: str) -> None:
            if stage not in bars:
                bars[stage] = tqdm(total=total, desc="calibration" if stage == "calibration" else
                                   "milling (points through)", unit="stop" if stage == "calibration" else "pt")
            bars[stage].n = done
            if detail:
                bars[stage].set_postfix_str(detail)
            bars[stage].refresh()

        def make_sensor(surface, model):        # twin only: the truth beside every completion reading
            nonlocal scored
            scored = ScoredSensor(completion_sensor(networks, hw.rig.drill, scene.controllers)(surface, model),
                                   hw.ground_truth)
            return scored

        def on_stage(stage: str, res: WindowResult) -> None:
            nonlocal result, truth, verdict
            result = res                        # kept if a later stage raises
            gt = hw.ground_truth if has_truth else None
            if stage in bars:
                bars.pop(stage).close()
            if stage == "calibration":
                cal = res.calibration
                if cal.model_fit is not None:
                    save_camera_model(cal.model, out_dir / "camera_model.toml",
                                      {"estimated_by": "micromill demo (rig characterisation on a 3x3x3 tip grid)",
                                       "rms_mm": cal.model_fit.rms_m * 1e3, "points": cal.model_fit.n_points})
                    wrote("camera_model.toml")
                _calibration_plot(out_dir / "calibration.png", cal)
                wrote("calibration.png")
                if until != "calibration":
                    print("fitting the trajectory ...")
            elif stage == "fit" and res.surface is not None:
                wrote("trajectory.png", _trajectory_image(out_dir / "trajectory.png", res.surface, res.model))
                if gt is not None and res.trajectory is not None:    # before milling changes the surface
                    truth = {k: round(v, 4) for k, v in score_fit_heights(gt, res.trajectory).items()}
            elif stage == "mill":
                last = hw.grab_stereo()
                if last is not None:
                    wrote("milled.png", cv2.imwrite(str(out_dir / "milled.png"), last.left))
                if gt is not None and truth is not None:
                    outcome = score_milling(gt, res.milling)
                    truth["milling"] = {k: round(float(v), 4) for k, v in outcome.items()}
                    milling_figure(out_dir / "milling.png", gt, res.milling,
                                   f"{res.milling.stop_reason.value} after {res.milling.duration_s / 60:.2f} "
                                   f"simulated min; success {bool(outcome['success'])}")
                    wrote("milling.png")
                    cause = explain_run(gt, res.milling, scored.rows, scene.controllers.milling.damper.through_level,
                                        out_dir / "failure.png")
                    wrote("failure.png", cause is not None)
                    verdict = {"window": "SUCCESS" if outcome["success"] else "FAILURE",
                               "why": None if cause is None else cause.text,
                               "failure": None if cause is None else cause.as_notes(res.milling.start_s)}

        if dry:
            dry_run = link_checks(hw, networks)
        else:
            result = run_window(open_session(hw), networks, scene.controllers, until=until, on_stage=on_stage,
                                progress=progress, make_sensor=make_sensor if has_truth else None)
    except HardwareError as exc:         # a stop while the session opens
        result.stopped_by = stop_cause(exc)
    except (Exception, KeyboardInterrupt) as exc:     # a controller raised, or the operator pressed Ctrl-C
        error = {"type": type(exc).__name__, "message": str(exc), "traceback": "error.txt"}
        result.stopped_by = ("KeyboardInterrupt: interrupted by the operator (Ctrl-C)"
                             if isinstance(exc, KeyboardInterrupt) else stop_cause(exc))
        (out_dir / "error.txt").write_text(traceback.format_exc())
        wrote("error.txt")
    finally:
        for bar in bars.values():
            bar.close()
        try:
            if result.stopped_by is not None:
                hw.stop(result.stopped_by)   # drill off, holding, deactivated (nothing to do if already stopped)
            sim_s = hw.now() if hw.state is not Lifecycle.UNCONFIGURED else 0.0    # no clock before configure
        finally:
            try:
                hw.close()
            except HardwareError as exc:      # a shutdown step failed (e.g. the drill did not confirm off)
                shutdown_error = str(exc)

    cal, surf, milling = result.calibration, result.surface, result.milling
    summary = {
        "scene": scene.source, "backend": backend, "seed": seed, "until": until, "armed": hw.armed,
        "dry_run_commands": hw.dry_run_commands, "stopped_by": result.stopped_by, "safety_fault": hw.fault,
        "error": error,
        # a shutdown step that failed (Hardware.close names each one; "THE DRILL MAY STILL BE ON"
        # when switching it off failed): None when the hardware closed cleanly
        "shutdown_error": shutdown_error,
        "simulated_time_s": round(sim_s, 3), "wall_time_s": round(time.perf_counter() - t_wall, 3),
        # the link checks of a dry run (scenarios.dry_run.link_checks); None when the window ran
        "dry_run": dry_run,
        "camera_model": None if cal is None else {k: v for k, v in vars(cal.model).items()},
        "characterisation_rms_mm": None if cal is None or cal.model_fit is None else round(cal.model_fit.rms_m * 1e3, 4),
        "calibration": None if cal is None else {
            "residuals_mm": (cal.calibration.residuals_m * 1e3).round(4).tolist(),
            "inliers": cal.calibration.inliers.tolist(), "rms_mm": round(cal.calibration.rms_m * 1e3, 4),
            "expected_error_at_centre_mm": round(float(cal.calibration.expected_error_m(
                hw.rig.calibration_targets_r.mean(axis=0))) * 1e3, 4),
            "skipped_setpoints": cal.skipped + [f"grid {i}" for i in cal.skipped_grid]},
        "trajectory": None if surf is None or surf.trajectory is None else {
            "centre_left_px": surf.centre_left_px.round(2).tolist(),
            "points_ini_r_mm": (surf.trajectory.points_ini_r * 1e3).round(4).tolist(),
            "normals_r": surf.trajectory.normals_r.round(5).tolist()},
        "trajectory_failure": None if surf is None else surf.failure,
        "milling": None if milling is None else {
            "stop_reason": milling.stop_reason.value, "message": milling.message,
            "milling_time_s": round(milling.duration_s, 3), "points_done": int(milling.done.sum()),
            "points": int(milling.done.size)},
        "ground_truth_twin_only": truth,
        # ok: the pipeline ran to the controller's own stop (every point read through; with an
        # earlier --until, that stage finished); a dry run: the link checks passed. Whether the
        # window is good is the twin's judgement (ground truth, never known to the controller):
        # `window_success`; the milling suite measures its rate.
        "ok": result.stopped_by is None and (dry_run["passed"] if dry_run is not None else result.finished(until)),
        "window_success": None if truth is None or "milling" not in truth else bool(truth["milling"]["success"]),
        # the twin's verdict with its cause (scenarios.failure; ground truth): None without a twin
        # or before milling
        "verdict": verdict,
        "out_dir": str(out_dir),
        # what this run wrote into out_dir (summary.json last)
        "files": written + ["summary.json"],
    }
    summary["exit_code"] = demo_exit_code(summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _trajectory_image(path: Path, surf, model) -> bool:
    """The image the trajectory was fitted on, with the keypoints, the centre and the trajectory;
    True when it was written."""
    left = surf.left.copy()
    for k in surf.keypoints_left:
        if k.found:
            _mark(left, k.xy_px, (0, 0, 255) if k.name == "bregma" else (0, 255, 0), k.name)
    if surf.centre_left_px is not None:
        _mark(left, surf.centre_left_px, (0, 255, 255), "centre")
    if surf.trajectory is not None:
        uv, _ = model.project(surf.trajectory.points_fit_mi)
        cv2.polylines(left, [np.round(uv).astype(np.int32).reshape(-1, 1, 2)], True, (255, 255, 0), 1, cv2.LINE_AA)
    return bool(cv2.imwrite(str(path), left))


_EXIT_MEANING = {EXIT_SUCCESS: "success", EXIT_WINDOW_FAILED: "window failed",
                 EXIT_HARDWARE_STOP: "stopped by hardware or safety", EXIT_UNFINISHED: "controller did not finish",
                 EXIT_CONTROLLER_ERROR: "a controller raised an error", EXIT_INTERRUPTED: "interrupted (Ctrl-C)"}


def format_summary(summary: dict) -> str:
    """The demo's console report: the stop and its cause first (``STOPPED:``), then each stage's
    results, the exit status and the files this run wrote."""
    lines = []
    if summary["stopped_by"]:
        lines.append(f"STOPPED: {summary['stopped_by']} (drill off, arm holding"
                     + ("; traceback in error.txt)" if summary["error"] else ")"))
    if summary["shutdown_error"]:
        lines.append(f"SHUTDOWN FAILED: {summary['shutdown_error']} (check the robot and the drill by hand)")
    if summary["dry_run"] is not None:
        lines += describe_dry_run(summary["dry_run"], summary["dry_run_commands"])
    else:
        lines += _stage_lines(summary)
    lines.append(f"simulated {summary['simulated_time_s']} s in {summary['wall_time_s']} s wall; ok: {summary['ok']}; "
                 f"exit status {summary['exit_code']} ({_EXIT_MEANING[summary['exit_code']]})")
    lines.append(f"wrote in {summary['out_dir']}: {', '.join(summary['files'])}")
    return "\n".join(lines)


def _stage_lines(summary: dict) -> list[str]:
    """The results of the stages that finished."""
    cal = summary["calibration"]
    lines = []
    if cal is None:
        return lines + ["calibration: not finished"]
    lines += [f"rig characterisation RMS {summary['characterisation_rms_mm']:.3f} mm; "
             f"landmark calibration RMS {cal['rms_mm']:.3f} mm over {sum(cal['inliers'])} setpoints "
             f"(expected error at the centre {cal['expected_error_at_centre_mm']:.3f} mm)"]
    lines += [f"  setpoint {i + 1}: residual {r:.3f} mm{'' if ok else ' (rejected)'}"
              for i, (r, ok) in enumerate(zip(cal["residuals_mm"], cal["inliers"]))]
    if summary["trajectory"] is not None:
        lines.append(f"trajectory: 32 points around centre pixel {summary['trajectory']['centre_left_px']}")
    elif summary["until"] != "calibration":
        lines.append(f"trajectory: NONE ({summary['trajectory_failure'] or 'not reached'})")
    if summary["ground_truth_twin_only"]:
        t = summary["ground_truth_twin_only"]
        lines.append(f"ground truth (twin only): fitted height error RMS {t['height_error_rms_mm']:.3f} mm, "
                     f"max {t['height_error_max_mm']:.3f} mm")
    if summary["milling"] is not None:
        m = summary["milling"]
        lines.append(f"milling: {m['message']}; {m['points_done']}/{m['points']} points through in "
                     f"{m['milling_time_s']:.1f} s simulated")
        if summary["window_success"] is not None:
            g = summary["ground_truth_twin_only"]["milling"]
            lines.append(f"ground truth (twin only): flap detachable {bool(g['detachable'])}, membrane breaches "
                         f"{int(g['breaches'])}, thickest bridge {g['max_bridge_um']:.0f} um -> "
                         f"{'SUCCESS' if g['success'] else 'FAILURE'}")
    v = summary.get("verdict")
    if v is not None:
        lines.append(f"verdict (twin): {v['window']}" + (f" — {v['why']}" if v["why"] else ""))
    elif summary["until"] == "mill":
        lines.append("verdict: none (no twin on this backend: the exit status follows the controller's stop)")
    return lines
