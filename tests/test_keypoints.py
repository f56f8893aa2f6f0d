"""Keypoint detection: peak extraction, image geometry helpers, weight loading, training smoke
test, and the shipped detectors on fresh twin renders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from controllers.perception.keypoint_detector import (DetectorConfig, DetectorLoadError, KeypointDetector, crop,
                                                      downscale, load_detector, model_card)
from controllers.perception.keypoint_net import KeypointUNet, NetConfig
from controllers.perception.peaks import find_peak, gaussian_map
from controllers.perception.training import TrainSettings, evaluate_detector, train_detector
from scenes.frames import apply, make_transform


def _gaussian64(shape, x0, y0, sigma):
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))


@settings(deadline=None, max_examples=200)
@given(x0=st.floats(2.0, 45.0), y0=st.floats(2.0, 29.0), sigma=st.floats(0.7, 5.0), amp=st.floats(0.05, 3.0))
def test_peak_extraction_is_exact_on_gaussian_maps(x0, y0, sigma, amp):
    peak = find_peak(amp * _gaussian64((32, 48), x0, y0, sigma))
    assert np.allclose(peak.xy, [x0, y0], atol=1e-9)
    assert peak.confidence <= amp + 1e-12


@settings(deadline=None, max_examples=50)
@given(x0=st.floats(3.0, 60.0), y0=st.floats(3.0, 36.0), sigma=st.floats(1.0, 4.0))
def test_training_target_peaks_where_asked(x0, y0, sigma):
    m = gaussian_map((40, 64), np.array([x0, y0]), sigma)
    assert m.dtype == np.float32 and m.max() <= 1.0
    assert np.allclose(find_peak(m).xy, [x0, y0], atol=2e-3)     # float32 map: ~1e-4 px


def test_peak_extraction_edge_cases():
    flat = np.zeros((10, 12))
    assert find_peak(flat).confidence == 0.0
    edge = np.zeros((10, 12))
    edge[0, 5] = 1.0
    assert np.allclose(find_peak(edge).xy, [5, 0])
    with pytest.raises(ValueError, match="2-D"):
        find_peak(np.zeros(5))


@settings(deadline=None, max_examples=60)
@given(cx=st.floats(-40.0, 140.0), cy=st.floats(-40.0, 100.0), size=st.sampled_from([16, 33, 64]))
def test_crop_origin_maps_crop_pixels_to_image_pixels(cx, cy, size):
    img = np.random.default_rng(0).integers(1, 255, (60, 100, 3), dtype=np.uint8)
    c, (x0, y0) = crop(img, np.array([cx, cy]), size)
    v, u = np.mgrid[0:size, 0:size]
    iy, ix = v + int(y0), u + int(x0)
    inside = (iy >= 0) & (iy < 60) & (ix >= 0) & (ix < 100)
    assert np.array_equal(c[inside], img[iy[inside], ix[inside]])
    assert not c[~inside].any()


@pytest.mark.parametrize("scale", [4, 8])
def test_downscale_coordinate_convention(scale):
    x0, y0 = 301.3, 157.8
    img = (255 * _gaussian64((540, 960), x0, y0, 3.0 * scale))[..., None].repeat(3, axis=2).astype(np.uint8)
    small = downscale(img, scale)
    assert small.shape[:2] == (-(-540 // scale), 960 // scale)
    p = find_peak(small[..., 0].astype(float))
    assert np.allclose((p.xy + 0.5) * scale - 0.5, [x0, y0], atol=0.1 * scale)


def _tiny_detector(target="drill_tip", k=1):
    cfg = DetectorConfig(target, ("drill_tip",) if k == 1 else ("bregma", "lambda"), (128, 64), coarse_scale=4,
                         roi_px=16)
    torch.manual_seed(0)
    return KeypointDetector(KeypointUNet(NetConfig(3, k, 4, 2)), KeypointUNet(NetConfig(3, k, 4, 2)), cfg)


def test_weights_round_trip_and_load_errors(tmp_path):
    det = _tiny_detector()
    path = tmp_path / "tiny.pt"
    det.save(path, {"note": "test"})
    loaded = load_detector(path)
    img = np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    assert np.allclose(det.coarse_maps(img), loaded.coarse_maps(img))
    assert model_card(path) == {"note": "test"}
    with pytest.raises(DetectorLoadError, match="expected 'cranial'"):
        load_detector(path, expected_target="cranial")
    with pytest.raises(DetectorLoadError, match="not found.*micromill train keypoints"):
        load_detector(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DetectorLoadError, match="not a readable weights file"):
        load_detector(tmp_path / "junk.pt")
    torch.save({"format": "something-else/9"}, str(tmp_path / "other.pt"))
    with pytest.raises(DetectorLoadError, match="format 'something-else/9'"):
        load_detector(tmp_path / "other.pt")
    blob = torch.load(str(path), weights_only=True)
    blob["fine"]["net"]["base_channels"] = 8          # shapes no longer match the state dict
    torch.save(blob, str(tmp_path / "mismatch.pt"))
    with pytest.raises(DetectorLoadError, match="incompatible"):
        load_detector(tmp_path / "mismatch.pt")


def test_truncated_or_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    """A file cut short (an interrupted copy) and weights holding NaN or inf (a diverged training)
    are refused when loaded; NaN weights used to load and find nothing ("need at least 6
    keypoint pairs, got 0" much later)."""
    path = tmp_path / "tiny.pt"
    _tiny_detector().save(path, {})
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(DetectorLoadError, match="cut.pt: not a readable weights file"):
        load_detector(tmp_path / "cut.pt")
    for bad in (float("nan"), float("inf")):
        blob = torch.load(str(path), weights_only=True)
        name = next(iter(blob["fine"]["state"]))
        blob["fine"]["state"][name].view(-1)[0] = bad
        torch.save(blob, str(tmp_path / "nan.pt"))
        with pytest.raises(DetectorLoadError, match=rf"nan.pt: tensor 'fine.state.{name}' holds NaN or inf"):
            load_detector(tmp_path / "nan.pt")


def test_detector_refuses_non_image_input():
    with pytest.raises(ValueError, match="uint8"):
        _tiny_detector().detect(np.zeros((64, 128, 3), np.float32))


def test_training_learns_a_synthetic_dot():
    """Bright dots on noise: a few epochs must beat a blind guess (the image centre) clearly."""
    rng = np.random.default_rng(0)
    n = 48
    imgs = rng.integers(0, 60, (n, 64, 128, 3), dtype=np.uint8)
    kp = np.stack([rng.uniform(10, 118, n), rng.uniform(10, 54, n)], axis=1)[:, None, :].astype(np.float32)
    for im, p in zip(imgs, kp[:, 0]):
        im[_gaussian64((64, 128), p[0], p[1], 2.0) > 0.3] = 230
    vis = np.ones((n, 1), bool)
    cfg = DetectorConfig("drill_tip", ("drill_tip",), (128, 64), coarse_scale=4, roi_px=16, threshold=0.2,
                         coarse_threshold=0.1)
    det, log = train_detector(imgs[:40], kp[:40], vis[:40], cfg,
                              TrainSettings(coarse_epochs=12, fine_epochs=12, batch_size=8, learning_rate=3e-3,
                                            base_channels=4, depth=2, threads=1), progress=False)
    assert log.coarse_epochs_done == 12 and np.isfinite(log.fine_loss)
    m = evaluate_detector(det, imgs[40:], kp[40:], vis[40:])[0]
    blind = float(np.sqrt(np.mean(np.sum((kp[40:, 0] - [64, 32]) ** 2, axis=1))))
    assert m.n_found >= 6 and m.rmse_px < 0.2 * blind


# ---- the shipped detectors on fresh renders (the weights are in the repository) ----

def test_shipped_drill_tip_detector_on_twin_renders(world):
    det = load_detector("drill_tip", expected_target="drill_tip")
    rng = np.random.default_rng(123)
    R = world.robot.fk(world.scene.robot.home_q)[:3, :3]
    centre = world.scene.calibration_targets_r().mean(axis=0)
    errors, misses = [], 0
    for _ in range(4):
        p = centre + 1e-3 * rng.uniform([-6, -10, 0], [6, 10, 5])
        imgs = world.renderer.render(make_transform(R, p), rng)
        for cam, img in zip(world.cameras, (imgs.left, imgs.right)):
            k = det.detect(img)[0]
            if not k.found:
                misses += 1
                continue
            errors.append(np.linalg.norm(k.xy_px - cam.project(p)[0]))
    assert misses == 0
    assert np.sqrt(np.mean(np.square(errors))) < 2.0, errors
    assert not det.detect(world.renderer.render(None, rng).left)[0].found     # no drill, no tip


def test_shipped_cranial_detector_on_twin_render(world):
    det = load_detector("cranial", expected_target="cranial")
    imgs = world.renderer.render(None, np.random.default_rng(5))
    truth = {"bregma": apply(world.T_s_to_r, world.skull.bregma_s), "lambda": apply(world.T_s_to_r, world.skull.lambda_s)}
    for cam, img in zip(world.cameras, (imgs.left, imgs.right)):
        for k in det.detect(img):
            assert k.found, k
            assert np.linalg.norm(k.xy_px - cam.project(truth[k.name])[0]) < 3.0, k


# ---- shared channels: two instances named by their order in the image ----

class _ImageAsMap(KeypointUNet):
    """A stand-in network whose confidence map is the image's first channel (exact, known)."""

    def forward(self, x):
        return torch.logit(x[:, :1].clamp(1e-4, 1 - 1e-4)).repeat(1, self.config.out_channels, 1, 1)


def _blobs(points, shape=(540, 960)):
    img = np.zeros((*shape, 3), np.float64)
    for x0, y0 in points:
        img[..., 0] = np.maximum(img[..., 0], 0.9 * _gaussian64(shape, x0, y0, 2.0))
    return np.round(255 * img).astype(np.uint8)


def _shared_detector(order=(1.0, 0.0)):
    cfg = DetectorConfig("cranial", ("bregma", "lambda"), (960, 540), channels=(0, 0), instance_order_px=order,
                         coarse_threshold=0.05, threshold=0.5)
    net = NetConfig(3, 1, 4, 2)
    return KeypointDetector(_ImageAsMap(net), _ImageAsMap(net), cfg)


@pytest.mark.parametrize("order, first", [((1.0, 0.0), 0), ((-1.0, 0.0), 1)])
def test_shared_channel_names_instances_by_image_direction(order, first):
    pts = [(600.3, 250.7), (480.6, 270.2)]
    found = {k.name: k for k in _shared_detector(order).detect(_blobs(pts))}
    assert found["bregma"].found and found["lambda"].found
    assert np.allclose(found["bregma"].xy_px, pts[first], atol=0.1)
    assert np.allclose(found["lambda"].xy_px, pts[1 - first], atol=0.1)


def test_shared_channel_with_one_instance_names_none():
    """One crossing cannot be named bregma or lambda: both are reported not found."""
    assert not any(k.found for k in _shared_detector().detect(_blobs([(500.2, 260.4)])))


def test_find_peaks_separation_and_order():
    from controllers.perception.peaks import find_peaks

    m = 0.6 * _gaussian64((60, 80), 20.3, 30.6, 2.0) + 0.9 * _gaussian64((60, 80), 50.7, 20.2, 2.0)
    peaks = find_peaks(m, 2, min_separation_px=10.0)
    assert np.allclose(peaks[0].xy, [50.7, 20.2], atol=1e-3) and np.allclose(peaks[1].xy, [20.3, 30.6], atol=1e-3)


def test_detector_config_checks_channels():
    with pytest.raises(ValueError, match="channels"):
        DetectorConfig("cranial", ("bregma", "lambda"), (960, 540), channels=(0, 2))
