"""Dense stereo (Zhao et al., seed 004, section III-B, first step): a {Mi} point cloud of the bone
from one stereo pair.

``dense_point_cloud``: dense stereo (OpenCV semi-global block matching, ``StereoSGBM``) on
the grey left/right images, then the orthogonal projection model
(``controllers.reconstruction.OrthoStereoModel.reconstruct_disparity``) turns every valid
left pixel and its disparity xl - xr into a point of {Mi}. ``controllers.surface_fit`` fits the
initial milling trajectory to the cloud.

No rectification. The MSCS looks from ~500 mm with ~7 deg vergence per camera along image x,
so epipolar lines are close to image rows, and the orthographic model already assumes
yr = yl. SGBM therefore runs on the raw grey images. What is *not* negligible is a constant
vertical offset between the two images (principal points and mounting differ by a few px):
on the twin's default rig yl - yr = 3.70 px on the exposed bone (3.44 to 3.96 px over it,
ground truth), and matching with that offset left in gives disparity errors of ~3.6 px
(~0.5 mm of depth) instead of ~0.1 px. ``dense_point_cloud`` therefore shifts the right
image by a single vertical offset, estimated over the region of interest by tracking features
(``estimate_vertical_offset_px``) unless ``StereoParams.vertical_offset_px`` gives it. This is
a translation, not a rectification: the remaining variation of yl - yr (+-0.26 px over the
bone on the twin, from vergence keystone and lens distortion) is left to SGBM's block
matching.

Frames and units: {Mi} as in ``controllers.reconstruction`` (x right, y down, z away from the
cameras), metres; pixels (u, v) with (0, 0) at the centre of the top-left pixel. This module
runs on the real robot: it never imports ``twin``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from controllers.reconstruction import OrthoStereoModel

__all__ = ["PointCloud", "StereoParams", "VerticalOffset", "dense_point_cloud", "estimate_vertical_offset_px"]

_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian sample -> its standard deviation

_SGBM_MODES = {"sgbm": cv2.StereoSGBM_MODE_SGBM, "hh": cv2.StereoSGBM_MODE_HH,
               "3way": cv2.StereoSGBM_MODE_SGBM_3WAY, "hh4": cv2.StereoSGBM_MODE_HH4}


@dataclass(frozen=True)
class StereoParams:
    """Settings of the dense stereo matcher (``cv2.StereoSGBM_create``), pixel units.

    Disparity range: ``min_disparity_px`` to ``min_disparity_px + num_disparities_px - 1``.
    Disparity is xl - xr, about 0 at the cameras' convergence point and ~6.5 px per mm of depth
    on the MSCS (both signs), so the default [-48, 47] px covers about +-7 mm of depth around
    the convergence point. ``num_disparities_px`` must be a positive multiple of 16; the cost is
    proportional to it.

    ``block_size_px`` (odd, >= 1): matching window (9 px: on the twin's noisy images the median
    disparity error falls from 0.46 px at 5 px to 0.36 px; noise-free it is 0.10 px either way);
    ``p1``, ``p2``: SGM smoothness penalties for disparity changes of 1 px and of more, per pixel
    of the block (multiplied by ``block_size_px ** 2`` as OpenCV recommends); ``mode``: "hh"
    (full 8-path SGM: on the twin it halves the sub-pixel error of "sgbm"/"3way", 0.10 vs
    0.2-0.3 px median, at 2-5x the time), "sgbm" (5 paths), "3way" (fastest), "hh4".

    Filters: ``disp12_max_diff_px`` left-right consistency check (max difference in px, -1
    disables); ``uniqueness_ratio`` (%, the best cost must beat the second best by this margin);
    speckle filter: connected regions smaller than ``speckle_window_size`` px whose disparity
    varies by more than ``speckle_range_px`` are invalidated (0 disables); ``pre_filter_cap``
    clips OpenCV's x-derivative pre-filter.

    ``vertical_offset_px``: yl - yr (px) between the images, removed by shifting the right image
    before matching; None estimates it from the images (``estimate_vertical_offset_px``).
    ``roi_margin_px``: rows/columns of context kept around a region of interest for matching.
    ``drop_range_edges``: drop disparities at the ends of the search range (a match pinned at a
    bound is usually a point outside it).
    """

    min_disparity_px: int = -48
    num_disparities_px: int = 96
    block_size_px: int = 9
    p1: int = 8
    p2: int = 32
    mode: str = "hh"
    disp12_max_diff_px: int = 1
    uniqueness_ratio: int = 5
    speckle_window_size: int = 100
    speckle_range_px: int = 2
    pre_filter_cap: int = 31
    vertical_offset_px: float | None = None
    roi_margin_px: int = 24
    drop_range_edges: bool = True

    def validate(self) -> None:
        if self.num_disparities_px <= 0 or self.num_disparities_px % 16:
            raise ValueError(f"num_disparities_px={self.num_disparities_px} must be a positive "
                             "multiple of 16")
        if self.block_size_px < 1 or self.block_size_px % 2 == 0:
            raise ValueError(f"block_size_px={self.block_size_px} must be odd and >= 1")
        if self.mode not in _SGBM_MODES:
            raise ValueError(f"mode={self.mode!r} must be one of {sorted(_SGBM_MODES)}")
        if not 0 <= self.p1 < self.p2:
            raise ValueError(f"p1={self.p1}, p2={self.p2}: need 0 <= p1 < p2")
        if self.roi_margin_px < 0:
            raise ValueError(f"roi_margin_px={self.roi_margin_px} must be >= 0")
        if self.vertical_offset_px is not None and not np.isfinite(self.vertical_offset_px):
            raise ValueError(f"vertical_offset_px={self.vertical_offset_px} must be finite or None")

    @property
    def max_disparity_px(self) -> int:
        return self.min_disparity_px + self.num_disparities_px - 1

    def matcher(self) -> cv2.StereoSGBM:
        bs2 = self.block_size_px ** 2
        return cv2.StereoSGBM_create(
            minDisparity=self.min_disparity_px, numDisparities=self.num_disparities_px,
            blockSize=self.block_size_px, P1=self.p1 * bs2, P2=self.p2 * bs2,
            disp12MaxDiff=self.disp12_max_diff_px, preFilterCap=self.pre_filter_cap,
            uniquenessRatio=self.uniqueness_ratio, speckleWindowSize=self.speckle_window_size,
            speckleRange=self.speckle_range_px, mode=_SGBM_MODES[self.mode])


@dataclass(frozen=True)
class PointCloud:
    """A dense reconstruction: one point per valid left pixel.

    ``points_mi`` (N, 3): {Mi} positions (m); ``pixels_left`` (N, 2): the left pixel (u, v) of each
    point; ``disparity_px`` (N,): its disparity xl - xr (px, sub-pixel); ``vertical_offset_px``:
    the yl - yr that was removed before matching; ``roi_left_px``: the region matched (x0, y0,
    x1, y1), the whole image if none was given.
    """

    points_mi: np.ndarray
    pixels_left: np.ndarray
    disparity_px: np.ndarray
    vertical_offset_px: float = 0.0
    roi_left_px: tuple[int, int, int, int] | None = None

    def __len__(self) -> int:
        return len(self.points_mi)


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return img if img.dtype == np.uint8 else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img.astype(np.uint8, copy=False), cv2.COLOR_BGR2GRAY)
    raise ValueError(f"image of shape {img.shape}: expected (H, W, 3) BGR or (H, W) grey")


def _check_roi(roi, width: int, height: int) -> tuple[int, int, int, int]:
    if roi is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = (int(round(float(v))) for v in roi)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"roi_left_px={tuple(roi)} is empty inside the {width}x{height} image "
                         "(expected (x0, y0, x1, y1), x1 > x0, y1 > y0)")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class VerticalOffset:
    """Result of ``estimate_vertical_offset_px``: ``offset_px`` = median yl - yr over
    ``n_features`` tracked features, ``spread_px`` their robust standard deviation (1.4826 MAD):
    a measure of how far a single vertical shift is from exact over the region."""

    offset_px: float
    n_features: int
    spread_px: float


MIN_OFFSET_FEATURES = 10
"""Fewest tracked features ``estimate_vertical_offset_px`` accepts."""


def estimate_vertical_offset_px(left_grey: np.ndarray, right_grey: np.ndarray, roi_left_px=None,
                                max_features: int = 400) -> VerticalOffset:
    """yl - yr (px) between the two images over a left-image region (x0, y0, x1, y1).

    Corners of the left image (``cv2.goodFeaturesToTrack``) are tracked into the right image by
    pyramidal Lucas-Kanade optical flow (4 levels: disparities of tens of px), kept when the
    backward track returns within 0.2 px, and the median of their yl - yr is returned. Without
    a region the central half of the image is used. On the twin it is within 0.04 px of the
    ground truth (phase correlation, tried first, scattered by +-0.4 px with the region).
    Raises ValueError when fewer than ``MIN_OFFSET_FEATURES`` features survive (too little
    texture): pass ``StereoParams.vertical_offset_px`` explicitly then.
    """
    h, w = left_grey.shape[:2]
    if roi_left_px is None:
        roi_left_px = (w // 4, h // 4, w - w // 4, h - h // 4)
    x0, y0, x1, y1 = _check_roi(roi_left_px, w, h)
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    p = cv2.goodFeaturesToTrack(left_grey, max_features, 1e-3, 5, mask=mask, blockSize=7)
    if p is None or len(p) < MIN_OFFSET_FEATURES:
        raise ValueError(f"only {0 if p is None else len(p)} corners in the region {(x0, y0, x1, y1)} "
                         "of the left image: too little texture to estimate the vertical offset "
                         "(set StereoParams.vertical_offset_px)")
    lk = dict(winSize=(21, 21), maxLevel=3,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-3))
    q, st_f, _ = cv2.calcOpticalFlowPyrLK(left_grey, right_grey, p, None, **lk)
    pb, st_b, _ = cv2.calcOpticalFlowPyrLK(right_grey, left_grey, q, None, **lk)
    p, q, pb = (a.reshape(-1, 2) for a in (p, q, pb))
    ok = (st_f.ravel() == 1) & (st_b.ravel() == 1) & (np.linalg.norm(pb - p, axis=1) < 0.2)
    if ok.sum() < MIN_OFFSET_FEATURES:
        raise ValueError(f"only {int(ok.sum())} of {len(p)} features tracked consistently into the "
                         "right image: cannot estimate the vertical offset (set "
                         "StereoParams.vertical_offset_px)")
    dy = p[ok, 1] - q[ok, 1]
    med = float(np.median(dy))
    return VerticalOffset(med, int(ok.sum()), float(_MAD_TO_SIGMA * np.median(np.abs(dy - med))))


def dense_point_cloud(left_bgr: np.ndarray, right_bgr: np.ndarray, model: OrthoStereoModel,
                      roi_left_px=None, params: StereoParams = StereoParams()) -> PointCloud:
    """Dense {Mi} point cloud of a stereo pair by semi-global matching, without rectification.

    ``left_bgr``, ``right_bgr``: (H, W, 3) BGR uint8 (or grey) images; ``model``: the stereo
    camera model; ``roi_left_px``: optional region (x0, y0, x1, y1) of the left image (px, x1
    and y1 exclusive) to reconstruct: the matcher then runs on a crop with
    ``params.roi_margin_px`` of context and the disparity search range to the sides, which is
    much faster than the whole image. Invalid disparities (no match, failed left-right check,
    speckles, and matches at the ends of the search range) are dropped. Surfaces whose true
    disparity lies outside the search range are *not* reliably rejected: SGBM returns wrong
    in-range disparities for many of them (on the twin's full image, the periphery of the
    head falls to -160 px and ~21 % of the returned points are such); use a region of interest
    around the work or widen the range.

    The right image is shifted vertically by ``params.vertical_offset_px`` (estimated over the
    region when None) so that image rows match; see the module docstring on why no further
    rectification is done.
    """
    params.validate()
    gl, gr = _grey(left_bgr), _grey(right_bgr)
    if gl.shape != gr.shape:
        raise ValueError(f"left {gl.shape} and right {gr.shape} images differ in size")
    h, w = gl.shape
    x0, y0, x1, y1 = _check_roi(roi_left_px, w, h)
    m = params.roi_margin_px
    r0, r1 = max(y0 - m, 0), min(y1 + m, h)
    c0 = max(x0 - max(params.max_disparity_px, 0) - m, 0)
    c1 = min(x1 - min(params.min_disparity_px, 0) + m, w)

    if params.vertical_offset_px is None:
        dy = estimate_vertical_offset_px(gl, gr, None if roi_left_px is None else (x0, y0, x1, y1)).offset_px
    else:
        dy = float(params.vertical_offset_px)
    # Right crop shifted by dy: right(u, v - dy) lands on row v, like the left image's row v.
    shift = np.float32([[1, 0, -c0], [0, 1, dy - r0]])
    right_crop = cv2.warpAffine(gr, shift, (c1 - c0, r1 - r0), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    left_crop = np.ascontiguousarray(gl[r0:r1, c0:c1])

    raw = params.matcher().compute(left_crop, right_crop)
    raw = raw[y0 - r0:y1 - r0, x0 - c0:x1 - c0]
    valid = raw > (params.min_disparity_px - 1) * 16
    disp = raw.astype(np.float64) / 16.0
    if params.drop_range_edges:
        valid &= (disp > params.min_disparity_px) & (disp < params.max_disparity_px)
    v, u = np.nonzero(valid)
    pixels = np.column_stack([u + x0, v + y0]).astype(np.float64)
    d = disp[v, u]
    points = model.reconstruct_disparity(pixels, d) if len(d) else np.zeros((0, 3))
    return PointCloud(points, pixels, d, dy, (x0, y0, x1, y1))
