"""``micromill demo``: the default scene, the drill through the paper's five calibration
setpoints via ``hw_bridge``, one stereo pair saved at each, and a summary.

Later issues grow this into the full cranial-window run (calibrate, fit, mill, judge).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from controllers.motion.pose_control import PoseController
from hw_bridge.registry import make_hardware
from scenes.frames import make_transform
from scenes.spec import load_scene


def run_demo(out_dir: Path, scene_path: str | None = None, seed: int = 0, backend: str = "twin") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = load_scene(scene_path)
    hw = make_hardware(backend, scene, seed)
    t_wall = time.perf_counter()
    rows = []
    try:
        hw.configure()
        hw.activate()
        pc = PoseController(hw)
        R_home = hw.robot.fk(hw.read().position)[:3, :3]
        cams = scene.sensors.cameras
        thumbs = []
        targets = scene.calibration_targets_r()
        for i, (target, setpoint) in enumerate(tqdm(list(zip(targets, scene.calibration_setpoints_r)),
                                                    desc="setpoints", unit="pt")):
            move = pc.move_to(make_transform(R_home, target))
            pc.hold(cams.delay_s + 2.0 / cams.rate_hz)     # let a frame exposed after arrival come in
            frame = hw.grab_stereo()
            q = hw.read().position
            err = float(np.linalg.norm(hw.robot.tool_position(q) - target))
            for side, img in (("left", frame.left), ("right", frame.right)):
                cv2.imwrite(str(out_dir / f"setpoint{i + 1}_{side}.png"), img)
            thumbs.append(cv2.resize(np.concatenate([frame.left, frame.right], axis=1), None, fx=0.4, fy=0.4))
            rows.append({"setpoint": i + 1, "setpoint_r_mm": (setpoint * 1e3).round(3).tolist(),
                         "target_r_mm": (target * 1e3).round(3).tolist(), "reached": move.reached,
                         "move_time_s": round(move.duration_s, 3), "position_error_um": round(err * 1e6, 3),
                         "frame_stamp_s": round(frame.stamp_s, 4)})
        sheet = np.concatenate(thumbs, axis=0)
        cv2.imwrite(str(out_dir / "setpoints_contact_sheet.png"), sheet)
        summary = {"scene": scene.source, "backend": backend, "seed": seed,
                   "simulated_time_s": round(hw.now(), 3), "wall_time_s": round(time.perf_counter() - t_wall, 3),
                   "all_reached": all(r["reached"] for r in rows), "setpoints": rows}
    finally:
        hw.close()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{'#':>2}  {'setpoint {R} (mm)':<24} {'reached':<8} {'error (um)':>10} {'move (s)':>9}"]
    for r in summary["setpoints"]:
        sp = ", ".join(f"{v:g}" for v in r["setpoint_r_mm"])
        lines.append(f"{r['setpoint']:>2}  {'(' + sp + ')':<24} {str(r['reached']):<8} "
                     f"{r['position_error_um']:>10.2f} {r['move_time_s']:>9.2f}")
    lines.append(f"simulated {summary['simulated_time_s']} s in {summary['wall_time_s']} s wall; "
                 f"all reached: {summary['all_reached']}")
    return "\n".join(lines)
