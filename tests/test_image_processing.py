"""Image preprocessing vs. the live transformers reference (``Gemma4UnifiedImageProcessor``).

Soft-token counts, position ids and padding must be identical. Pixel values must be identical when no
resize happens (decode, RGB conversion, rescale and patch layout are then all that is left); after a
resize Pillow's bicubic (two passes, width first, as torchvision does) and torchvision's antialiased
uint8 bicubic differ slightly. Measured on 318 resized cases (random sizes 1–3000 px, every budget;
smooth, noise and edge images): max |Δ| = 2/255 in every class; worst fraction of differing values
per image: upscaling 1.5 % (smooth) / 1.0 % (noise) / 0.2 % (edges), downscaling 0.7 % / 0.7 % / 0.5 %,
extreme aspect ratios 0.7 % / 1.0 % / 0.4 %; mean |Δ| ≤ 0.015/255. Asserted: max |Δ| ≤ 2/255,
≤ 2 % of values differing, mean |Δ| ≤ 0.03/255. (A single-call Pillow resize, which may run the
vertical pass first, was off by up to 12/255 on 25 % of values for tall images; see the tall cases.)
"""

from __future__ import annotations

import io
import math
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageOps
from transformers import Gemma4UnifiedImageProcessor
from transformers.models.gemma4_unified.image_processing_gemma4_unified import get_aspect_ratio_preserving_size

from mlx_gemma4.errors import InputError
from mlx_gemma4.processing import image as image_mod
from mlx_gemma4.processing.image import load_image, process_image, target_size

MAX_DIFF = 2 / 255 + 1e-6  # two uint8 levels, plus float32 rounding of the rescale
MAX_FRACTION = 0.02
MAX_MEAN = 0.03 / 255


@cache
def reference(budget: int) -> Gemma4UnifiedImageProcessor:
    """The reference image processor at one budget (built once)."""
    return Gemma4UnifiedImageProcessor(max_soft_tokens=budget)


def run_reference(image: Image.Image, budget: int) -> tuple[np.ndarray, np.ndarray, int]:
    """pixel_values (budget, 6912), positions (budget, 2), soft-token count from the reference."""
    out = reference(budget)(image, return_tensors="np")
    return out["pixel_values"][0], out["image_position_ids"][0], int(out["num_soft_tokens_per_image"][0])


def smooth(h: int, w: int) -> Image.Image:
    """Deterministic smooth colour gradients (the hardest case for resampler differences)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.stack([128 + 100 * np.sin(x / 17 + y / 23), 128 + 100 * np.cos(x / 11 - y / 7), (x * 3 + y * 5) % 256], -1)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    """Uniform random RGB noise."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def assert_matches(image: Image.Image, budget: int, source=None, *, exact: bool) -> dict:
    """Compare the port (fed ``source``, default the image) with the reference (fed ``image``)."""
    ref_pv, ref_pos, ref_n = run_reference(image, budget)
    got = process_image(image if source is None else source, budget)
    assert got.num_soft_tokens == ref_n
    assert got.pixel_values.shape == ref_pv.shape == (budget, 6912)
    assert got.pixel_values.dtype == np.float32 and got.position_ids.dtype == np.int64
    np.testing.assert_array_equal(got.position_ids, ref_pos)  # positions and −1 padding
    assert not got.pixel_values[ref_n:].any()  # zero padding rows
    diff = np.abs(got.pixel_values[:ref_n].astype(np.float64) - ref_pv[:ref_n])
    stats = {"max": float(diff.max(initial=0)), "fraction": float((diff > 0.5 / 255).mean()) if ref_n else 0.0,
             "mean": float(diff.mean()) if ref_n else 0.0}
    if exact:
        np.testing.assert_array_equal(got.pixel_values, ref_pv)
    else:
        assert stats["max"] <= MAX_DIFF, stats
        assert stats["fraction"] <= MAX_FRACTION, stats
        assert stats["mean"] <= MAX_MEAN, stats
    return stats


# (height, width, budget): tiny, extreme aspect ratios, odd sizes, every budget, up- and downscaling.
RESIZED = [
    (1, 1, 70),
    (1, 1, 1120),
    (1, 5000, 280),
    (5000, 1, 280),
    (1, 5000, 70),
    (5000, 1, 1120),
    (47, 49, 140),
    (49, 47, 70),
    (2, 3, 70),
    (7, 13, 560),
    (37, 1000, 1120),
    (1000, 37, 70),
    (480, 640, 280),
    (200, 300, 280),
    (768, 768, 560),
    (333, 777, 140),
    (999, 1001, 280),
    (10, 4000, 560),
    (4000, 10, 140),
    (123, 45, 280),
    (640, 480, 1120),
    (3000, 4000, 140),
    # Tall images downscaled ≥ 2×: catch a vertical-first resize (the reference resizes width first).
    (1667, 451, 70),
    (822, 427, 70),
    (1957, 785, 280),
]


@pytest.mark.parametrize("h,w,budget", RESIZED)
def test_resized_noise_matches_reference(h, w, budget):
    assert_matches(noise(h, w, seed=h * 7 + w), budget, exact=False)


@pytest.mark.parametrize(
    "h,w,budget", [(480, 640, 280), (200, 300, 70), (1000, 37, 1120), (2400, 3600, 560), (1200, 400, 70)]
)
def test_resized_smooth_matches_reference(h, w, budget):
    assert_matches(smooth(h, w), budget, exact=False)


def test_very_large_image_matches_reference():
    stats = assert_matches(smooth(4000, 6000), 70, exact=False)
    assert stats["max"] > 0  # a real resize happened: the tolerance path is exercised


# Sizes that are already at their target: no resize, so everything must be bit-exact.
AT_TARGET = [(480, 1344, 280), (288, 480, 70), (336, 432, 70), (1104, 1104, 560), (48, 3360, 70), (960, 1344, 560),
             (1536, 1680, 1120), (528, 528, 140)]


@pytest.mark.parametrize("h,w,budget", AT_TARGET)
def test_at_target_size_is_bit_exact(h, w, budget):
    assert target_size(h, w, budget) == (h, w)
    assert_matches(noise(h, w, seed=h + w), budget, exact=True)


@pytest.mark.parametrize("budget", image_mod.SUPPORTED_BUDGETS)
def test_every_budget(budget):
    assert_matches(noise(300, 500, seed=budget), budget, exact=False)


def _mode_image(mode: str) -> Image.Image:
    """A 288×480 (at target size for budget 70) image in ``mode`` with varied content, incl. alpha."""
    rng = np.random.default_rng(sum(map(ord, mode)))
    rgb = rng.integers(0, 256, (288, 480, 3), dtype=np.uint8)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (288, 480), dtype=np.uint8)]), "RGBA")
    if mode == "LA":
        return Image.fromarray(rng.integers(0, 256, (288, 480, 2), dtype=np.uint8), "LA")
    if mode == "L":
        return Image.fromarray(rgb[..., 0], "L")
    if mode == "I":  # 8-bit values stored as 32-bit integers convert exactly like Pillow does
        image = Image.fromarray(rng.integers(0, 256, (288, 480), dtype=np.int32))
        assert image.mode == "I"
        return image
    if mode == "1":
        return Image.fromarray(rgb[..., 0] > 127).convert("1")
    if mode == "CMYK":
        return Image.fromarray(rng.integers(0, 256, (288, 480, 4), dtype=np.uint8), "CMYK")
    if mode == "P":
        return Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    if mode == "P+transparency":
        image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        image.info["transparency"] = 5  # palette entry 5 is transparent → white
        return image
    if mode == "RGB+transparency":
        image = Image.fromarray(rgb // 64 * 64)
        image.info["transparency"] = (0, 64, 128)  # this colour is transparent → white
        return image
    if mode == "RGBX":
        return Image.fromarray(rgb).convert("RGBX")
    raise AssertionError(mode)


# 16-bit and float modes are left out on purpose: Pillow (so the reference) clips them at 255, which
# turns 16-bit scans white and [0, 1] float images black; test_high_bit_depth_* pin our scaling instead.
MODES = ["RGBA", "LA", "P", "P+transparency", "L", "I", "1", "CMYK", "RGB+transparency", "RGBX"]


@pytest.mark.parametrize("mode", MODES)
def test_mode_conversion_is_bit_exact(mode):
    image = _mode_image(mode)
    assert_matches(image, 70, exact=True)


@pytest.mark.parametrize("mode", ["RGBA", "P+transparency", "LA"])
def test_mode_conversion_survives_png_round_trip(mode, tmp_path):
    """Modes with transparency read back from a file convert like the in-memory image."""
    path = tmp_path / "img.png"
    _mode_image(mode).save(path)
    with Image.open(path) as reopened:
        reopened.load()
        assert_matches(reopened, 70, source=path, exact=True)


def _grey(image) -> np.ndarray:
    return np.asarray(load_image(image))[..., 0]


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_high_bit_depth_16bit_scaled_not_saturated(dtype):
    values = np.array([[0, 257, 32896, 40000, 65535]], dtype=dtype)
    image = Image.fromarray(values)
    assert image.mode in ("I;16", "I;16B")
    assert _grey(image).tolist() == [[0, 1, 128, 156, 255]]  # v / 257, rounded; Pillow alone gives 255s


def test_high_bit_depth_16bit_png_file(tmp_path):
    path = tmp_path / "scan16.png"
    Image.fromarray(np.full((60, 90), 20000, np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    got = process_image(path, 70).pixel_values
    assert np.allclose(got[0, :3], np.float32(78) * np.float32(1 / 255))  # 20000 / 257 = 77.8 → 78


def test_high_bit_depth_int32_and_float_modes():
    assert _grey(Image.fromarray(np.array([[0, 1000, 65535]], np.int32))).tolist() == [[0, 4, 255]]
    assert _grey(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))).tolist() == [[0, 128, 255]]
    assert _grey(Image.fromarray(np.array([[0.0, 2.0, 255.0]], np.float32))).tolist() == [[0, 2, 255]]


@pytest.mark.parametrize(
    "values,match",
    [
        (np.array([[-5, 100]], np.int32), "outside 0..255"),
        (np.array([[0, 70000]], np.int32), "outside 0..65535"),
        (np.array([[-0.5, 0.5]], np.float32), "outside"),
        (np.array([[0.0, 300.0]], np.float32), "outside 0..255"),
        (np.array([[0.0, np.nan]], np.float32), "NaN"),
    ],
)
def test_high_bit_depth_out_of_range_refused(values, match):
    with pytest.raises(InputError, match=match):
        load_image(Image.fromarray(values))


def test_rgba_alpha_composited_on_white():
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., 0] = 200  # red channel 200, alpha 0 on the left half, 255 on the right half
    rgba[:, 24:, 3] = 255
    got = np.asarray(load_image(Image.fromarray(rgba, "RGBA")))
    assert (got[:, :24] == 255).all()  # fully transparent → white
    assert (got[:, 24:] == [200, 0, 0]).all()


# EXIF orientation tag → the transpose that turns the upright image into what is stored in the file.
STORED_FROM_UPRIGHT = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _upright() -> Image.Image:
    """288×480 (h×w), grey with a red block at the top left and a blue one at the bottom right."""
    a = np.full((288, 480, 3), 128, np.uint8)
    a[:96, :96] = (255, 0, 0)
    a[-96:, -96:] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("orientation", sorted(STORED_FROM_UPRIGHT))
def test_exif_orientation_applied(orientation, tmp_path):
    upright = _upright()
    op = STORED_FROM_UPRIGHT[orientation]
    stored = upright if op is None else upright.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    stored.save(path, quality=95, exif=exif)

    got = np.asarray(load_image(path)).astype(int)
    assert got.shape == (288, 480, 3)  # upright: width and height swapped back for 5–8
    assert abs(got[:96, :96].mean(axis=(0, 1)) - [255, 0, 0]).max() < 12  # red stays top-left
    assert abs(got[-96:, -96:].mean(axis=(0, 1)) - [0, 0, 255]).max() < 12

    # Same pixels as the reference fed the upright decoded image (288×480 is at target size at 70).
    with Image.open(path) as raw:
        assert_matches(ImageOps.exif_transpose(raw), 70, source=path, exact=True)
    # The reference loading the file itself (torchvision decoder, EXIF applied) gives the same layout.
    ref = reference(70)(str(path), return_tensors="np")
    got_full = process_image(path, 70)
    np.testing.assert_array_equal(got_full.position_ids, ref["image_position_ids"][0])


def test_path_bytes_and_pil_agree(tmp_path):
    image = noise(300, 200, seed=3)
    path = tmp_path / "x.png"
    image.save(path)
    a = process_image(path, 140)
    b = process_image(path.read_bytes(), 140)
    c = process_image(str(path), 140)
    d = process_image(image, 140)
    for other in (b, c, d):
        np.testing.assert_array_equal(a.pixel_values, other.pixel_values)
        np.testing.assert_array_equal(a.position_ids, other.position_ids)


def test_layout_is_48px_blocks_in_raster_order():
    """Independent of the reference: block k is the k-th 48×48 crop (HWC), positions (col, row)."""
    pixels = np.random.default_rng(5).integers(0, 256, (96, 144, 3), dtype=np.uint8)
    values, positions, n = image_mod.patchify(pixels, 70)
    assert n == 6
    for k in range(n):
        row, col = divmod(k, 3)
        crop = pixels[row * 48 : (row + 1) * 48, col * 48 : (col + 1) * 48].reshape(-1)
        np.testing.assert_array_equal(values[k], crop.astype(np.float32) * np.float32(1 / 255))
        assert tuple(positions[k]) == (col, row)
    assert (positions[n:] == -1).all() and not values[n:].any()


@pytest.mark.parametrize(
    "h,w,budget,expected",
    [
        (480, 640, 280, (672, 912)),
        (200, 300, 280, (624, 960)),
        (768, 768, 560, (1104, 1104)),
        (1000, 37, 70, (2064, 48)),
        (37, 1000, 1120, (288, 8304)),
        (480, 1344, 280, (480, 1344)),
    ],
)
def test_spec_worked_examples(h, w, budget, expected):
    assert target_size(h, w, budget) == expected


def test_target_size_sweep_matches_reference_formula():
    rng = np.random.default_rng(11)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 6000, (400, 2))]
    sizes += [(1, n) for n in range(1, 400, 7)] + [(n, 1) for n in range(1, 400, 7)]
    sizes += [(h, w) for h in (1, 2, 3, 47, 48, 49) for w in (1, 2, 3, 47, 48, 49, 10_000, 100_000)]
    for budget in image_mod.SUPPORTED_BUDGETS:
        for h, w in sizes:
            want = get_aspect_ratio_preserving_size(h, w, 16, budget * 9, 3)
            assert target_size(h, w, budget) == want, (h, w, budget)
            n = (want[0] // 48) * (want[1] // 48)
            assert 1 <= n <= budget
            assert image_mod.num_soft_tokens(h, w, budget) == n


def test_small_images_are_upscaled_to_fill_budget():
    # A 10×10 image still takes (almost) the whole budget: the processor always fills it.
    assert image_mod.num_soft_tokens(10, 10, 280) == 256  # 16×16 blocks (17² = 289 would not fit)
    assert math.isclose(image_mod.num_soft_tokens(10, 10, 1120), 33 * 33)


def test_jpeg_bytes_decode_like_pil(tmp_path):
    buf = io.BytesIO()
    smooth(288, 480).save(buf, format="JPEG", quality=90)
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        decoded.load()
        assert_matches(decoded, 70, source=buf.getvalue(), exact=True)
