"""Video → sampled frames cut into 48×48 pixel blocks exactly as images are, with their timestamps.

Pipeline (PyAV, FFmpeg's bindings): open → checks from the container header alone (a video track, the
frame size against the image path's pixel guard, the duration against the cap) → read the packet
index without decoding (frame timestamps and keyframes) → pick frame numbers as transformers'
``Gemma4UnifiedVideoProcessor`` does (``n`` frames at ⌊i·total/n⌋, ``n`` = 32 or total/fps·``fps``)
→ seek to the keyframe before each picked frame and decode forward to it, so a long 1080p clip is
never decoded whole → RGB → the display matrix's rotation applied → one target size for the whole
video (≤ 70 soft tokens per frame) → each frame resized and patchified by the image path's functions.

Timestamps are rendered as the reference renders them: frame number / average frame rate, floored
to "mm:ss" (so on a variable-frame-rate clip they are the nominal, not the presented, times).

A clip with fewer frames than asked for uses every frame (the reference raises instead). Clips
longer than ``max_seconds`` (60 s, the model card's limit) or needing more than ``max_frames``
(60: 60 s at 1 fps) are refused from the container header before any decoding, unless
``sample_long`` is set; then the frames are spread over the whole clip and their number capped.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from ..errors import InputError
from . import image as image_mod
from . import sources
from .sources import check_path

DEFAULT_NUM_FRAMES = 32
DEFAULT_BUDGET = 70  # soft tokens per frame: the reference video processor's max_soft_tokens
MAX_SECONDS = 60.0  # the model card: video up to 60 s …
MAX_FRAMES = 60  # … at 1 frame per second
DEFAULT_FPS = 24.0  # what the reference assumes when a container gives no frame rate

VideoSource = str | os.PathLike | bytes | bytearray | memoryview
_STILL_FORMATS = {"image2", "image2pipe"}  # and every "*_pipe" single-image demuxer
_NOT_VIDEO_FORMATS = {"tty", "txt"}
_NOT_VIDEO_CODECS = {"ansi", "text", "subrip"}


@dataclass(frozen=True)
class VideoOptions:
    """How frames are sampled: a fixed count (default) or a rate; the length cap and the sound switch."""

    num_frames: int | None = DEFAULT_NUM_FRAMES
    fps: float | None = None  # frames per second of video; replaces num_frames when given
    max_seconds: float = MAX_SECONDS
    max_frames: int = MAX_FRAMES
    sample_long: bool = False  # longer clips: spread max_frames over the whole clip instead of an error
    sound: bool = False  # also feed the clip's audio track as audio blocks after the frames
    budget: int = DEFAULT_BUDGET  # soft tokens per frame at most
    max_pixels: int | None = image_mod.DEFAULT_MAX_PIXELS  # per frame, as for images

    def __post_init__(self) -> None:
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not self.fps > 0:
                raise InputError(f"video fps must be a positive number, got {self.fps!r}")
            object.__setattr__(self, "num_frames", None)
        elif isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or self.num_frames < 1:
            raise InputError(f"video num_frames must be a positive integer, got {self.num_frames!r}")
        if not self.max_seconds > 0 or isinstance(self.max_frames, bool) or self.max_frames < 1:
            raise InputError("video max_seconds and max_frames must be positive")
        image_mod.check_budget(self.budget)


@dataclass(frozen=True)
class ProcessedVideo:
    """One video ready for the model: per sampled frame its padded patches, positions and timestamp."""

    pixel_values: np.ndarray  # (frames, budget, 6912) float32
    position_ids: np.ndarray  # (frames, budget, 2) int64, −1 rows after num_soft_tokens
    num_soft_tokens: int  # per frame (every frame has the same size)
    frame_indices: list[int]
    timestamps: list[float]  # seconds: frame index / fps
    fps: float
    total_frames: int
    size: tuple[int, int]  # (height, width) of every frame after rotation and resizing
    sound: np.ndarray | None = None  # (samples, channels) float32 of the audio track, when asked for
    sound_rate: int = 0

    @property
    def stamps(self) -> list[str]:
        """The "mm:ss" label of every frame."""
        return [format_timestamp(t) for t in self.timestamps]


def format_timestamp(seconds: float) -> str:
    """ "mm:ss", minutes and seconds floored and zero-padded (minutes keep counting past 59)."""
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def requested_frames(total: int, fps: float, options: VideoOptions) -> int:
    """Frames the options ask for: ``num_frames``, or total/fps·``fps`` (at least one) as the reference."""
    return max(1, int(total / fps * options.fps)) if options.fps is not None else options.num_frames


def sample_indices(total: int, fps: float, options: VideoOptions) -> list[int]:
    """Frame numbers to use: ``n`` frames at ⌊i·total/n⌋ (every frame when the clip has fewer than ``n``)."""
    # Above max_frames only with sample_long (process_video refuses it otherwise): then capped.
    n = min(requested_frames(total, fps, options), options.max_frames, total)
    return [i * total // n for i in range(n)]


def describe_source(source: object) -> str:
    """A short name for a video source in error messages."""
    return sources.describe_source(source, "video")


def _open(source: VideoSource, name: str) -> av.container.InputContainer:
    """Open a path or bytes with FFmpeg (header only), or InputError."""
    if isinstance(source, (str, os.PathLike)):
        target: object = str(check_path(source, name))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InputError(f"{name}: empty video data (0 bytes)")
        target = io.BytesIO(bytes(source))
    else:
        raise InputError(f"{name}: a video must be a file path or bytes")
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise InputError(f"{name}: not a video FFmpeg can read ({e})") from e


def _video_stream(container: av.container.InputContainer, name: str, options: VideoOptions):
    """The first video track, after the checks that need only the header."""
    if not container.streams.video:
        raise InputError(f"{name}: no video track" + (" (an audio-only file)" if container.streams.audio else ""))
    stream = container.streams.video[0]
    # FFmpeg also "opens" still images (one-frame streams) and text files (rendered as ANSI art).
    fmt = container.format.name
    if fmt in _STILL_FORMATS or fmt.endswith("_pipe"):
        raise InputError(f"{name}: a still image, not a video; pass it as an image")
    if fmt in _NOT_VIDEO_FORMATS or stream.codec_context.name in _NOT_VIDEO_CODECS:
        raise InputError(f"{name}: not a video FFmpeg can read (it reads as {fmt})")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        raise InputError(f"{name}: the video track has no frame size")
    if options.max_pixels is not None and width * height > options.max_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height:,} pixels per frame is over the limit of "
            f"{options.max_pixels:,}; pass a larger max_pixels to allow it"
        )
    seconds = None
    if container.duration is not None and container.duration > 0:
        seconds = container.duration / av.time_base
    elif stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    if seconds is not None:
        _check_length(name, seconds, None, options)
    return stream


def _check_length(name: str, seconds: float, frames: int | None, options: VideoOptions) -> None:
    """Refuse clips over the cap (unless sample_long): from the header, and again once frames are counted."""
    if options.sample_long:
        return
    if seconds > options.max_seconds + 1e-6:
        raise InputError(
            f"{name}: {seconds:.1f} s of video is longer than the {options.max_seconds:g} s the model takes; "
            "trim it, or allow sampling it down (sample_long=True / --video-sample-long)"
        )
    if frames is not None and frames > options.max_frames:
        how = f"sampling at {options.fps:g} fps needs" if options.fps is not None else "asking for"
        raise InputError(
            f"{name}: {how} {frames} frames, more than the {options.max_frames} the model takes (60 s at 1 fps); "
            "ask for fewer, or allow sampling it down (sample_long=True)"
        )


def _frame_times(container, stream, name: str) -> tuple[list[int], list[int]]:
    """Presentation timestamps of every frame (sorted) and of the keyframes, from packets alone."""
    pts: list[int] = []
    keys: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's end-of-stream marker; frames an edit list hides
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                raise InputError(f"{name}: the video frames carry no timestamps (unsupported container)")
            pts.append(t)
            if packet.is_keyframe:
                keys.append(t)
    except av.error.FFmpegError as e:
        raise InputError(f"{name}: truncated or corrupt video ({e})") from e
    if not pts:
        raise InputError(f"{name}: the video track has no frames")
    declared = stream.frames
    if declared and declared > len(pts):
        raise InputError(f"{name}: truncated video (the header lists {declared} frames, {len(pts)} are present)")
    pts.sort()
    keys.sort()
    return pts, keys or pts[:1]


def _decode_at(container, stream, wanted: list[int], keys: list[int], name: str) -> Iterator[av.VideoFrame]:
    """The frames presented at the ``wanted`` timestamps (ascending): seek only when a keyframe lies ahead."""
    frames = None
    position: int | None = None  # timestamp of the last decoded frame
    for target in wanted:
        key = keys[max(bisect.bisect_right(keys, target) - 1, 0)]
        if frames is None or position is None or key > position:
            container.seek(key, stream=stream, backward=True)
            frames = container.decode(stream)
        frame = None
        try:
            for frame in frames:
                position = frame.pts if frame.pts is not None else position
                if position is not None and position >= target:
                    break
            else:
                frame = None
        except av.error.FFmpegError as e:
            raise InputError(f"{name}: truncated or corrupt video ({e})") from e
        if frame is None:
            raise InputError(f"{name}: truncated video (a frame listed in the index cannot be decoded)")
        yield frame


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the display matrix's rotation applied (counter-clockwise degrees)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _read_sound(source: VideoSource, name: str) -> tuple[np.ndarray, int] | None:
    """The first audio track as (samples, channels) float32 and its rate; None when there is none."""
    container = _open(source, name)
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        parts = []
        for frame in container.decode(stream):
            parts += [f.to_ndarray() for f in resampler.resample(frame)]
        parts += [f.to_ndarray() for f in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise InputError(f"{name}: corrupt audio track ({e})") from e
    finally:
        container.close()
    if not parts:
        return None
    return np.concatenate(parts, axis=1).T.astype(np.float32, copy=False), int(stream.rate)


def process_video(source: VideoSource, options: VideoOptions | None = None) -> ProcessedVideo:
    """Decode the sampled frames of one video and cut each into the model's padded patch layout."""
    options = options or VideoOptions()
    name = describe_source(source)
    container = _open(source, name)
    try:
        stream = _video_stream(container, name, options)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else DEFAULT_FPS
        pts, keys = _frame_times(container, stream, name)
        total = len(pts)
        _check_length(name, total / fps, requested_frames(total, fps, options), options)
        indices = sample_indices(total, fps, options)
        pixels, positions, count, size = [], [], 0, (0, 0)
        for frame in _decode_at(container, stream, [pts[i] for i in indices], keys, name):
            rgb = _upright_rgb(frame)
            resized = image_mod.resize_to_budget(Image.fromarray(rgb), options.budget)
            values, pos, count = image_mod.patchify(resized, options.budget)
            pixels.append(values)
            positions.append(pos)
            size = resized.shape[:2]
    finally:
        container.close()
    sound = _read_sound(source, name) if options.sound else None
    return ProcessedVideo(
        np.stack(pixels), np.stack(positions), count, indices, [i / fps for i in indices], fps, total,
        (int(size[0]), int(size[1])), *(sound or (None, 0)),
    )

