"""Speed of the pre-measurement perception. Run: ``python -m benchmarks.perception_speed``.

Figures (one CPU core: torch and OpenCV single-threaded; medians over fresh twin renders):
- keypoint detection per 540 x 960 image, drill tip and cranial (bregma + lambda): the whole
  ``detect`` call (downscale, coarse U-Net, ROI crops, fine U-Net, peaks), with the coarse and
  fine passes timed separately; rate in Hz against the paper's 72 Hz;
- the ratio to a single full-resolution pass of the same coarse network (what the two-pass
  design saves);
- dense stereo (SGBM) over the window region and over the full image, and the trajectory fit;
- completion-level estimation (crop, network, sampling at 32 points) on a 2 mm window, the
  paper's 72 Hz figure for its completion network.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.timing import median_s

PAPER_HZ = 72.0


def _median_ms(fn, items) -> float:
    """Median wall time (ms) of ``fn(item)`` over ``items``."""
    it = iter(items)
    return 1e3 * median_s(lambda: fn(next(it)), len(items))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=30, help="fresh renders per figure")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from controllers.dense_stereo import dense_point_cloud
    from controllers.perception.completion_detector import load_estimator
    from controllers.perception.keypoint_detector import load_detector, to_tensor
    from controllers.perception.keypoint_net import pad_to_multiple
    from controllers.reconstruction import estimate_camera_model
    from controllers.surface_fit import fit_initial_trajectory, trajectory_centre_px
    from scenes.frames import apply, make_transform
    from scenes.spec import load_scene
    from twin.world import TwinWorld

    scene = load_scene()
    world = TwinWorld(scene, seed=0)
    rng = np.random.default_rng(0)
    R = world.robot.fk(scene.robot.home_q)[:3, :3]
    centre = scene.calibration_targets_r().mean(axis=0)
    drill_imgs = [world.renderer.render(make_transform(R, centre + 1e-3 * rng.uniform([-6, -10, 0], [6, 10, 5])),
                                        rng).left for _ in range(args.images)]
    skull_imgs = [world.renderer.render(None, rng) for _ in range(max(3, args.images // 3))]

    print("micromill perception benchmark (one core)")
    for target, imgs in (("drill_tip", drill_imgs), ("cranial", [s.left for s in skull_imgs] * 3)):
        det = load_detector(target)
        for im in imgs[:3]:
            det.detect(im)                                   # warm-up
        total = _median_ms(det.detect, imgs)
        coarse = _median_ms(det.coarse_maps, imgs)
        with torch.inference_mode():
            full = _median_ms(lambda im: det.coarse(pad_to_multiple(to_tensor(im), 2 ** det.coarse.config.depth)),
                              imgs[:5])
        print(f"  {target:<10} detect per image  median {total:6.2f} ms = {1e3 / total:6.1f} Hz "
              f"(paper {PAPER_HZ:.0f} Hz: {'met' if 1e3 / total >= PAPER_HZ else 'NOT met'}, "
              f"{1e3 / total / PAPER_HZ:.2f}x); coarse pass {coarse:.2f} ms, fine pass {total - coarse:.2f} ms")
        print(f"  {'':<10} one full-resolution pass of the coarse net: {full:.1f} ms "
              f"({full / total:.1f}x the two-pass detector)")

    # Dense stereo and the trajectory fit on the true rig model (ground-truth grid projections).
    g = np.stack(np.meshgrid(*[np.linspace(-a, a, 4) for a in (6e-3, 10e-3, 3e-3)], indexing="ij"), -1).reshape(-1, 3)
    pts = centre + g
    fit = estimate_camera_model(world.cameras[0].project(pts), world.cameras[1].project(pts), pts)
    b = world.cameras[0].project(apply(world.T_s_to_r, world.skull.bregma_s))[0]
    lam = world.cameras[0].project(apply(world.T_s_to_r, world.skull.lambda_s))[0]
    c = trajectory_centre_px(b, lam)
    half = 3.8e-3 / fit.model.prx_m_per_px
    roi = (int(c[0] - half), int(c[1] - half), int(c[0] + half), int(c[1] + half))
    roi_ms = _median_ms(lambda s: dense_point_cloud(s.left, s.right, fit.model, roi), skull_imgs)
    full_ms = _median_ms(lambda s: dense_point_cloud(s.left, s.right, fit.model), skull_imgs[:3])
    cloud = dense_point_cloud(skull_imgs[0].left, skull_imgs[0].right, fit.model, roi)
    fit_ms = _median_ms(lambda _: fit_initial_trajectory(cloud, c, fit.model, fit.T_mi_to_r), range(5))
    print(f"  dense stereo, window region {roi[2] - roi[0]}x{roi[3] - roi[1]} px   median {roi_ms:7.1f} ms")
    print(f"  dense stereo, full 960x540                 median {full_ms:7.1f} ms "
          f"({full_ms / roi_ms:.1f}x the region)")
    print(f"  trajectory fit (32 points)                 median {fit_ms:7.1f} ms")

    est = load_estimator("completion")
    a = 2 * np.pi * np.arange(32) / 32
    pts = c + 2e-3 / fit.model.prx_m_per_px * np.stack([np.cos(a), np.sin(a)], axis=1)
    imgs = [s.left for s in skull_imgs] + drill_imgs
    for im in imgs[:3]:
        est.estimate(im, c, pts)                              # warm-up
    comp = _median_ms(lambda im: est.estimate(im, c, pts), imgs)
    net_ms = _median_ms(lambda im: est.predict_map(im[:est.config.input_px, :est.config.input_px]), imgs)
    print(f"  completion estimate (32 points)            median {comp:7.2f} ms = {1e3 / comp:6.1f} Hz "
          f"(paper {PAPER_HZ:.0f} Hz: {'met' if 1e3 / comp >= PAPER_HZ else 'NOT met'}, "
          f"{1e3 / comp / PAPER_HZ:.2f}x); network alone {net_ms:.2f} ms")
    world.close()


if __name__ == "__main__":
    main()
