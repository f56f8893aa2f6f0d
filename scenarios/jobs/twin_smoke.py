"""twin_smoke: rendering, kinematics and the hardware interface agree.

One case: a random skull (scene overrides), a drill target offset from the centre of the
paper's calibration pattern; the drill is driven there through ``hw_bridge`` by the DQ pose
controller, then one stereo frame is grabbed. Metrics:
- ``fk_pybullet_error_m``: DQ Robotics FK vs PyBullet's tool pose at the final joints;
- ``reach_error_m``: tool position from the measured joints vs the target;
- ``tip_reprojection_error_px``: ground-truth projection of the burr centre (cv2.projectPoints,
  true joints at the frame's exposure) vs the centroid of the rendered burr's pixels (ray cast
  through undistorted pixel rays): the two camera code paths agree; worst of both cameras;
- ``tip_visible_fraction``: rendered burr pixels / area of the burr's projected disc (low
  values mean the burr is hidden, e.g. by bone or the shank);
- ``frame_age_s``: how old the newest frame is when grabbed (delay + up to one frame);
- ``render_pair_ms``: wall time to render the stereo pair.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from controllers.pipeline import open_session
from scenes.frames import make_transform
from scenes.spec import load_scene
from scenarios.cases import CaseContext, CaseOutput, case_session
from twin.render import LABEL_BURR, LABEL_SHAFT


def _burr_centroid(labels: np.ndarray) -> tuple[np.ndarray | None, int]:
    v, u = np.nonzero(labels == LABEL_BURR)
    if u.size == 0:
        return None, 0
    return np.array([u.mean(), v.mean()]), int(u.size)


def run_case(ctx: CaseContext) -> CaseOutput:
    scene = load_scene(ctx.scene_path, ctx.scene_overrides)
    with case_session(ctx, scene) as hw:
        s = open_session(hw)
        gt = hw.ground_truth
        centre = hw.rig.calibration_targets_r.mean(axis=0)
        p = ctx.job_parameters
        target = centre + 1e-3 * np.array([p["offset_x_mm"], p["offset_y_mm"], p["offset_z_mm"]])
        move = s.pc.move_to(s.loop, make_transform(s.R_tool_to_r, target), timeout_s=15.0)
        cam_spec = scene.sensors.cameras
        s.loop.hold(cam_spec.delay_s + 2.0 / cam_spec.rate_hz)      # a frame exposed after arrival
        q_meas = s.loop.state.position
        reach = float(np.linalg.norm(hw.robot.tool_position(q_meas) - target))
        q_true, _ = gt.arm.state()
        pos_pb, _ = gt.arm.tool_pose_pybullet()
        fk_err = float(np.linalg.norm(pos_pb - hw.robot.tool_position(q_true)))

        frame = hw.grab_stereo()
        age = hw.now() - frame.stamp_s
        t0 = time.perf_counter()
        T_tool = hw.robot.fk(gt.true_q_at(frame.stamp_s))
        full = gt.renderer.render(T_tool, None)
        render_ms = 1e3 * (time.perf_counter() - t0)
        burr = gt.renderer.render(T_tool, None, gt.drill_geometry.burr_only())
        p_tip = T_tool[:3, 3]
        errs, fracs, marks, on_drill = [], [], [], []
        for cam, labels, full_labels in zip(gt.cameras, (burr.labels_left, burr.labels_right),
                                            (full.labels_left, full.labels_right)):
            uv = cam.project(p_tip)[0]
            u, v = (int(round(x)) for x in uv)
            on_drill.append(cam.in_image(uv)[0] and full_labels[v, u] in (LABEL_BURR, LABEL_SHAFT))
            c, n = _burr_centroid(labels)
            r_px = scene.drill.burr_radius_m * cam.fx_px / float(cam.depth(p_tip)[0])
            fracs.append(n / (np.pi * r_px ** 2))
            errs.append(float(np.linalg.norm(c - uv)) if c is not None else float("inf"))
            marks.append((uv, c))
        artifacts = []
        if ctx.save_artifacts:
            panels = []
            for img, (uv, c) in zip((frame.left, frame.right), marks):
                img = img.copy()
                cv2.drawMarker(img, tuple(int(round(x)) for x in uv), (0, 255, 0), cv2.MARKER_CROSS, 40, 1)
                panels.append(img)
            path = Path(ctx.artifacts_dir) / f"case{ctx.index:03d}_stereo.png"
            cv2.imwrite(str(path), cv2.resize(np.concatenate(panels, axis=1), None, fx=0.5, fy=0.5))
            artifacts.append(f"artifacts/{path.name}")
        return CaseOutput(
            metrics={"fk_pybullet_error_m": fk_err, "reach_error_m": reach,
                     "tip_reprojection_error_px": max(errs), "tip_visible_fraction": min(fracs),
                     "tip_on_drill": float(all(on_drill)),
                     "frame_age_s": age, "render_pair_ms": render_ms},
            artifacts=artifacts,
            notes={"move_reached": move.reached, "move_duration_s": move.duration_s})
