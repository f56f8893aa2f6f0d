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
the pipeline reached its own stop); 1 the twin's verdict is FAILURE; 3 a hardware or safety stop
ended the run; 4 the controller stopped without finishing (no trajectory, milling timeout or
perception lost).

The controllers run at 50 Hz (``control.period_s = 0.02`` for this run; the scene's default is
the robot driver's 1 kHz), which is what makes a whole window take about a minute of wall time.

The same pipeline runs on any backend (``--backend coppeliasim|sas``; a robot that really moves
needs ``--arm`` and ``safety.armed = true``, else it is a dry run), can stop after a stage
(``--until calibration|fit``), and can be recorded (``--record run.mcap``) and replayed offline
(``micromill replay run.mcap``: ``run_demo`` on the ``replay`` backend).

Writes to the output folder: ``camera_model.toml`` (the estimated model), ``calibration.png``
(residuals per grid point and per setpoint), ``trajectory.png`` (keypoints and trajectory on
the left image), ``milling.png`` (c_i(t), h_i(t) and the final groove), ``failure.png`` (twin
only, a failed window: the failing point and its neighbours before the failure), ``milled.png``
(the left camera's last view of the window), ``summary.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from controllers.perception.completion_detector import load_estimator
from controllers.perception.keypoint_detector import load_detector
from controllers.pipeline import STAGES, Networks, WindowResult, camera_sensor, open_session, run_window
from controllers.reconstruction import save_camera_model
from hw_bridge.errors import HardwareError
from hw_bridge.interface import Hardware
from hw_bridge.registry import make_hardware
from scenes.spec import SceneSpec, load_scene
from scenarios.jobs.milling import milling_figure
from scenarios.jobs.premeasurement_common import new_figure, save_figure
from scenarios.failure import explain_run
from scenarios.scoring import ScoredSensor, score_fit_heights, score_milling

DEMO_CONTROL_PERIOD_S = 0.02

#: ``micromill demo`` exit statuses (``demo_exit_code``)
EXIT_SUCCESS = 0
EXIT_WINDOW_FAILED = 1
EXIT_HARDWARE_STOP = 3
EXIT_UNFINISHED = 4


def demo_exit_code(summary: dict) -> int:
    """The demo's exit status from its summary, first match wins:

    - 1 (``EXIT_WINDOW_FAILED``): the twin's verdict is FAILURE (membrane breached or flap not
      detachable), whatever ended the run (the verdict's cause says what);
    - 3 (``EXIT_HARDWARE_STOP``): a hardware or safety stop ended the run (``stopped_by``, the
      interface's ``safety_fault``, or the milling loop's SAFETY_FAULT stop);
    - 4 (``EXIT_UNFINISHED``): the controller stopped without finishing the stage asked for (no
      trajectory fitted, or milling stopped by timeout or lost perception);
    - 0 (``EXIT_SUCCESS``): the pipeline reached its own stop and, on the twin, the window succeeded.

    Without a twin (another backend, a dry run, a replay) there is no verdict: the status
    reflects the controller's stop only."""
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


def run_demo(out_dir: Path, scene: SceneSpec, seed: int = 0, backend: str = "twin", *, armed: bool = False,
             recorder=None, until: str = "mill", hw: Hardware | None = None) -> dict:
    """Run the pipeline (``controllers.pipeline.run_window``) through stage ``until`` (``STAGES``)
    on ``backend`` (or on the given, unconfigured ``hw``; it is closed at the end); write each
    stage's outputs as soon as it finishes and return the summary. A hardware stop (a safety stop,
    the end of a replayed recording) ends the run early: what was computed before it is kept and
    ``stopped_by`` says why."""
    if until not in STAGES:
        raise ValueError(f"until={until!r}: allowed {', '.join(STAGES)}")
    if hw is None:
        hw = make_hardware(backend, scene, seed, armed=armed, recorder=recorder)
    backend = hw.name
    t_wall = time.perf_counter()
    result = WindowResult()
    truth = None
    verdict = None
    has_truth = hasattr(type(hw), "ground_truth")     # twin only: scoring against the true skull and bone
    scored: ScoredSensor | None = None
    try:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        networks = Networks(load_detector("drill_tip", expected_target="drill_tip"),
                            load_detector("cranial", expected_target="cranial"), load_estimator())
        bars: dict[str, tqdm] = {}

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
            scored = ScoredSensor(camera_sensor(networks.completion, hw.rig.drill)(surface, model), hw.ground_truth)
            return scored

        def on_stage(stage: str, res: WindowResult) -> None:
            nonlocal truth, verdict
            gt = hw.ground_truth if has_truth else None
            if stage in bars:
                bars[stage].close()
            if stage == "calibration":
                cal = res.calibration
                if cal.model_fit is not None:
                    save_camera_model(cal.model, out_dir / "camera_model.toml",
                                      {"estimated_by": "micromill demo (rig characterisation on a 3x3x3 tip grid)",
                                       "rms_mm": cal.model_fit.rms_m * 1e3, "points": cal.model_fit.n_points})
                _calibration_plot(out_dir / "calibration.png", cal)
                if until != "calibration":
                    print("fitting the trajectory ...")
            elif stage == "fit" and res.surface is not None:
                _trajectory_image(out_dir / "trajectory.png", res.surface, res.model)
                if gt is not None and res.trajectory is not None:    # before milling changes the surface
                    truth = {k: round(v, 4) for k, v in score_fit_heights(gt, res.trajectory).items()}
            elif stage == "mill":
                last = hw.grab_stereo()
                if last is not None:
                    cv2.imwrite(str(out_dir / "milled.png"), last.left)
                if gt is not None and truth is not None:
                    outcome = score_milling(gt, res.milling)
                    truth["milling"] = {k: round(float(v), 4) for k, v in outcome.items()}
                    milling_figure(out_dir / "milling.png", gt, res.milling,
                                   f"{res.milling.stop_reason.value} after {res.milling.duration_s / 60:.2f} "
                                   f"simulated min; success {bool(outcome['success'])}")
                    cause = explain_run(gt, res.milling, scored.rows, scene.controllers.milling.damper.through_level,
                                        out_dir / "failure.png")
                    verdict = {"window": "SUCCESS" if outcome["success"] else "FAILURE",
                               "why": None if cause is None else cause.text,
                               "failure": None if cause is None else cause.as_notes(res.milling.start_s)}

        result = run_window(open_session(hw), networks, scene.controllers, until=until, on_stage=on_stage,
                            progress=progress, make_sensor=make_sensor if has_truth else None)
    except HardwareError as exc:         # a stop while the session opens
        result.stopped_by = f"{type(exc).__name__}: {exc}"
    finally:
        sim_s = hw.now()
        hw.close()

    cal, surf, milling = result.calibration, result.surface, result.milling
    summary = {
        "scene": scene.source, "backend": backend, "seed": seed, "until": until, "armed": hw.armed,
        "dry_run_commands": hw.dry_run_commands, "stopped_by": result.stopped_by, "safety_fault": hw.fault,
        "simulated_time_s": round(sim_s, 3), "wall_time_s": round(time.perf_counter() - t_wall, 3),
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
        # earlier --until, that stage finished). Whether the window is good is the twin's judgement
        # (ground truth, never known to the controller): `window_success`; the milling suite
        # measures its rate.
        "ok": result.stopped_by is None and result.finished(until),
        "window_success": None if truth is None or "milling" not in truth else bool(truth["milling"]["success"]),
        # the twin's verdict with its cause (scenarios.failure; ground truth): None without a twin
        # or before milling
        "verdict": verdict,
    }
    summary["exit_code"] = demo_exit_code(summary)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _trajectory_image(path: Path, surf, model) -> None:
    """The image the trajectory was fitted on, with the keypoints, the centre and the trajectory."""
    left = surf.left.copy()
    for k in surf.keypoints_left:
        if k.found:
            _mark(left, k.xy_px, (0, 0, 255) if k.name == "bregma" else (0, 255, 0), k.name)
    if surf.centre_left_px is not None:
        _mark(left, surf.centre_left_px, (0, 255, 255), "centre")
    if surf.trajectory is not None:
        uv, _ = model.project(surf.trajectory.points_fit_mi)
        cv2.polylines(left, [np.round(uv).astype(np.int32).reshape(-1, 1, 2)], True, (255, 255, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), left)


_EXIT_MEANING = {EXIT_SUCCESS: "success", EXIT_WINDOW_FAILED: "window failed",
                 EXIT_HARDWARE_STOP: "stopped by hardware or safety", EXIT_UNFINISHED: "controller did not finish"}


def format_summary(summary: dict) -> str:
    cal = summary["calibration"]
    lines = []
    if not summary["armed"]:
        lines.append(f"DRY RUN: not armed; {summary['dry_run_commands']} commands logged, none sent")
    if summary["stopped_by"]:
        lines.append(f"STOPPED: {summary['stopped_by']}")
    if cal is None:
        return "\n".join(lines + ["calibration: not finished"])
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
    lines.append(f"simulated {summary['simulated_time_s']} s in {summary['wall_time_s']} s wall; ok: {summary['ok']}; "
                 f"exit status {summary['exit_code']} ({_EXIT_MEANING[summary['exit_code']]})")
    return "\n".join(lines)
