"""Images → 48×48 pixel blocks for the encoder-free vision embedder.

Pipeline: decode (Pillow, EXIF orientation applied) → 8-bit (16-bit/float scaled) → RGB →
aspect-ratio-preserving bicubic resize that fills the soft-token budget → ×float32(1/255) → 48×48×3
blocks in raster order with (x, y) block positions → padded to the budget (pixels 0, positions −1).
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from . import sources
from .sources import check_path, open_binary

SUPPORTED_BUDGETS = (70, 140, 280, 560, 1120)
DEFAULT_BUDGET = 280
PATCH_SIZE = 16  # "teacher" patch of the original model
POOLING_KERNEL = 3  # 3×3 teacher patches make one model patch
BLOCK = PATCH_SIZE * POOLING_KERNEL  # 48 px: one soft token
PATCH_DIM = BLOCK * BLOCK * 3  # 6912 values per soft token
# Pillow refuses images above 2 × its warning level (~179 MP); we use that as our default too, but as
# our own check with our own message, so callers can raise it (`max_pixels`) for huge scans.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
# The reference multiplies by a float32 scale; dividing would differ in the last bit.
RESCALE = np.float32(1.0 / 255.0)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

# Image.MAX_IMAGE_PIXELS is process-global; changing it for one open must not race another thread.
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProcessedImage:
    """One image ready for the model: padded patches, block positions and the soft-token count."""

    pixel_values: np.ndarray  # (budget, 6912) float32, zero rows after num_soft_tokens
    position_ids: np.ndarray  # (budget, 2) int64, (x=col, y=row); −1 rows after num_soft_tokens
    num_soft_tokens: int
    size: tuple[int, int]  # (height, width) after resizing


def describe_source(source: object) -> str:
    """A short name for an image source in error messages (the path, or what kind of object it is)."""
    return sources.describe_source(
        source, "image",
        lambda s: f"PIL image {s.mode} {s.width}x{s.height}" if isinstance(s, Image.Image) else None)


def check_budget(budget: int) -> int:
    """Return ``budget`` if it is one of the supported soft-token budgets, else raise InputError."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or int(budget) not in SUPPORTED_BUDGETS:
        allowed = ", ".join(map(str, SUPPORTED_BUDGETS))
        raise InputError(f"image budget {budget!r} is not supported; use one of {allowed}")
    return int(budget)


def target_size(height: int, width: int, budget: int = DEFAULT_BUDGET) -> tuple[int, int]:
    """(height, width) the image is resized to: the largest 48-px multiples whose area fits the budget."""
    budget = check_budget(budget)
    if height < 1 or width < 1:
        raise InputError(f"image of size {width}x{height} has no pixels")
    target_px = budget * BLOCK * BLOCK
    factor = math.sqrt(target_px / (height * width))
    # Same float expressions as the reference (factor·side / 48, floored) so rounding agrees exactly.
    new_h = int(math.floor(factor * height / BLOCK)) * BLOCK
    new_w = int(math.floor(factor * width / BLOCK)) * BLOCK
    if new_h == 0 and new_w == 0:  # cannot happen for budget ≥ 1 (factor·side ≥ 48 for the longer side)
        raise InputError(f"image of size {width}x{height} cannot be resized to a 48-px grid")
    max_side = budget * BLOCK
    # Extreme aspect ratios: the short side rounds to 0; keep one block row and as many columns as fit.
    if new_h == 0:
        new_h, new_w = BLOCK, min((width // height) * BLOCK, max_side)
    elif new_w == 0:
        new_h, new_w = min((height // width) * BLOCK, max_side), BLOCK
    if new_h * new_w > target_px:  # unreachable with the rules above; kept as a guard
        raise InputError(f"image of size {width}x{height} would exceed the {budget}-token budget")
    return new_h, new_w


def num_soft_tokens(height: int, width: int, budget: int = DEFAULT_BUDGET) -> int:
    """Number of soft tokens an image of this size takes at ``budget``."""
    new_h, new_w = target_size(height, width, budget)
    return (new_h // BLOCK) * (new_w // BLOCK)


def _open(source: ImageSource, name: str, max_pixels: int | None) -> Image.Image:
    """Decode a path/bytes source, reading the header before any pixel data."""
    if isinstance(source, (str, os.PathLike)):
        # Opened lazily from the file: a huge non-image costs one header read, not its size in RAM.
        with open_binary(check_path(source, name), name) as fp:
            return _decode(fp, name, max_pixels)
    data = bytes(source)
    if not data:
        raise InputError(f"{name}: empty image data (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(fp: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    """Header, pixel-count check, then the pixels; Pillow's many error types become one InputError."""
    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our check below replaces Pillow's bomb check
            try:
                image = Image.open(fp)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        _check_pixels(image, name, max_pixels)
        image.load()  # the first frame, before the file closes
    except InputError:
        raise
    except UnidentifiedImageError as e:
        raise InputError(f"{name}: not an image Pillow can read (unknown or unsupported format)") from e
    except Image.DecompressionBombError as e:  # only if another thread lowered the limit meanwhile
        raise InputError(f"{name}: too many pixels ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        # Pillow reports truncated/corrupt data with several exception types.
        raise InputError(f"{name}: truncated or corrupt image ({e})") from e
    return image


def _check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    """Reject decompression bombs before their pixels are decoded."""
    pixels = image.width * image.height
    if max_pixels is not None and pixels > max_pixels:
        raise InputError(
            f"{name}: {image.width}x{image.height} = {pixels:,} pixels is over the limit of {max_pixels:,} "
            "(possible decompression bomb); pass a larger max_pixels to allow it"
        )


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_8bit(image: Image.Image, name: str) -> Image.Image:
    """Single-channel 16-bit, 32-bit integer and float images scaled to 8-bit "L"; other modes unchanged.

    Pillow's own conversion (and so the transformers processor) clips these values at 255: a 16-bit
    scan turns white and a float image in [0, 1] black. Here 16-bit data maps full scale to full scale
    (v / 257); mode "I" is taken as 8-bit data when it fits 0..255 and as 16-bit when it fits 0..65535;
    mode "F" as [0, 1] when it fits there and as 0..255 otherwise. Anything else is refused.
    """
    if image.mode not in (*_SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{name}: {image.mode} image contains NaN or infinite pixels")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and hi > 255):
        if lo < 0 or hi > 65535:
            raise InputError(f"{name}: {image.mode} pixel values {lo:g}..{hi:g} are outside 0..65535")
        scale = 255 / 65535
    elif image.mode == "F" and hi <= 1:
        if lo < 0:
            raise InputError(f"{name}: float pixel values {lo:g}..{hi:g} are outside [0, 1] and 0..255")
        scale = 255.0
    else:
        if lo < 0 or hi > 255:
            raise InputError(f"{name}: {image.mode} pixel values {lo:g}..{hi:g} are outside 0..255")
        scale = 1.0
    out = Image.fromarray(np.rint(values * scale).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):  # a 16-bit PNG's transparent grey level, scaled likewise
        out.info["transparency"] = int(round(transparent * scale))
    return out


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB the way the reference converts: transparency composited onto white, other modes via Pillow."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a path, bytes or PIL image into an upright (EXIF-applied) RGB PIL image."""
    name = describe_source(source)
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image, name, max_pixels)
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        image = _open(source, name, max_pixels)
    else:
        raise InputError(f"{name}: an image must be a file path, bytes or a PIL image")
    if image.width < 1 or image.height < 1:
        raise InputError(f"{name}: image has no pixels ({image.width}x{image.height})")
    try:
        with warnings.catch_warnings():
            # A malformed EXIF block only warns in Pillow; orientation then stays as stored.
            warnings.simplefilter("ignore")
            image = ImageOps.exif_transpose(image)
        return to_rgb(to_8bit(image, name))
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise InputError(f"{name}: cannot convert image mode {image.mode!r} to RGB ({e})") from e


def resize_to_budget(image: Image.Image, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """Resize an RGB image to its budget size (bicubic, antialiased); returns (H, W, 3) uint8."""
    new_h, new_w = target_size(image.height, image.width, budget)
    # Two single-axis passes, width first, each rounded to uint8: the order torchvision's antialiased
    # uint8 resize uses. A one-call Pillow resize may run the vertical pass first (when that is
    # cheaper), which on strong downscaling of tall images differs from the reference by up to 12
    # levels on a quarter of the values; in this order the two agree within 1–2 levels on < 2 %.
    # Pillow's bicubic antialiases on downscaling (support widened by the scale), as antialias=True does.
    if new_w != image.width:
        image = image.resize((new_w, image.height), Image.Resampling.BICUBIC)
    if new_h != image.height:
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def patchify(pixels: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(H, W, 3) uint8 → padded (budget, 6912) float32 blocks, (budget, 2) int64 positions, count."""
    height, width, _ = pixels.shape
    rows, cols = height // BLOCK, width // BLOCK
    n = rows * cols
    if n > budget or rows * BLOCK != height or cols * BLOCK != width:
        raise ValueError(f"{width}x{height} pixels do not form at most {budget} whole 48-px blocks")
    # Each block is the 48×48×3 crop flattened in HWC order; blocks in raster order. This equals the
    # reference's 16-px patchify + 3×3 merge (verified bit-exact in the tests).
    blocks = pixels.reshape(rows, BLOCK, cols, BLOCK, 3).transpose(0, 2, 1, 3, 4).reshape(n, PATCH_DIM)
    values = np.zeros((budget, PATCH_DIM), dtype=np.float32)
    np.multiply(blocks, RESCALE, out=values[:n], dtype=np.float32)
    positions = np.full((budget, 2), -1, dtype=np.int64)
    ys, xs = np.divmod(np.arange(n, dtype=np.int64), cols)
    positions[:n, 0] = xs
    positions[:n, 1] = ys
    return values, positions, n


def process_image(
    source: ImageSource, budget: int = DEFAULT_BUDGET, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ProcessedImage:
    """Decode, resize and cut one image into the model's padded patch layout."""
    budget = check_budget(budget)
    pixels = resize_to_budget(load_image(source, max_pixels=max_pixels), budget)
    values, positions, n = patchify(pixels, budget)
    return ProcessedImage(values, positions, n, (pixels.shape[0], pixels.shape[1]))
