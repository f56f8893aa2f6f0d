"""Speed of the thickness classifier's network. Run: ``python -m benchmarks.thickness_speed``.

Crops per second on ONE CPU thread (torch and OpenCV single-threaded), batches of 64 random
32 x 32 crops, eval mode, ``torch.inference_mode``; median over ``--repeats`` timed batches after
warm-up, for the network of each training variant (random initialisation: the cost does not
depend on the weights). Compared with seed 000's 90 fps (one crop per frame would need 90
crops/s; the milling loop reads ~32 points per frame), and the weights' size with the 10 MB limit.
"""
from __future__ import annotations

import argparse
import io
import os

from benchmarks.timing import median_s

TARGET_CROPS_PER_S = 90.0
BATCH = 64


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="timed batches per variant")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from controllers.perception.thickness_classes import CROP_PX
    from controllers.perception.thickness_net import ThicknessNet
    from scenarios.train_thickness import VARIANTS

    torch.manual_seed(0)
    x = torch.rand(BATCH, 3, CROP_PX, CROP_PX)
    print(f"micromill thickness network benchmark (one thread, batch {BATCH}, median of {args.repeats})")
    for name, (config, _) in VARIANTS.items():
        net = ThicknessNet(config).eval()
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        with torch.inference_mode():
            for _ in range(3):
                net(x)                                           # warm-up
            t = median_s(lambda: net(x), args.repeats)
        rate = BATCH / t
        print(f"  {name:<17} {rate:8.0f} crops/s ({1e3 * t / BATCH:.3f} ms/crop), {rate / TARGET_CROPS_PER_S:5.1f}x the "
              f"{TARGET_CROPS_PER_S:.0f} crops/s target; {sum(p.numel() for p in net.parameters())} parameters, "
              f"{buf.tell() / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
