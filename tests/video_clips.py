"""Test clips made with PyAV: moving shapes on a gradient, optionally rotated, variable-rate or with a tone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def picture(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: a horizontal gradient, a red square moving right and a blue bar moving down."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = np.stack([x * 0.3, x * 0.6 + 40, 255 - x * 0.5], -1).astype(np.uint8)
    side = max(2, min(width, height) // 4)
    left = (i * 7) % max(1, width - side)
    img[height // 3 : height // 3 + side, left : left + side] = (230, 30, 30)
    top = (i * 5) % max(1, height - 4)
    img[top : top + 4, width // 2 :] = (20, 20, 200)
    return img


def write_clip(
    path: Path,
    *,
    frames: int = 40,
    size: tuple[int, int] = (96, 64),
    fps: int = 10,
    rotation: int = 0,
    durations_ms: list[int] | None = None,
    tone_hz: float | None = None,
    codec: str = "libx264",
    rate: int = 16000,
    keyint: int | None = None,
) -> Path:
    """Encode a clip of ``frames`` pictures of ``size`` (width, height) at ``fps``.

    ``rotation``: display-matrix rotation (counter-clockwise degrees; the stored pictures are turned the
    other way so the upright view is ``picture``). ``durations_ms``: a variable frame rate (per-frame
    durations, cycled). ``tone_hz``: a sine tone on an audio track (AAC, stereo, ``rate`` Hz). ``keyint``:
    frames between keyframes (x264's default is 250; phone cameras use about one second).
    """
    width, height = size
    stored_w, stored_h = (height, width) if rotation % 180 else (width, height)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "28", **({"g": str(keyint)} if keyint else {})}
        if rotation:
            stream.set_display_rotation(rotation)
        if durations_ms:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        sound = None
        if tone_hz is not None:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "stereo"
        t_ms = 0
        for i in range(frames):
            stored = np.ascontiguousarray(np.rot90(picture(i, width, height), -(rotation // 90)))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            if durations_ms:
                frame.pts, frame.time_base = t_ms, Fraction(1, 1000)
                t_ms += durations_ms[i % len(durations_ms)]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            seconds = (t_ms / 1000) if durations_ms else frames / fps
            t = np.arange(int(seconds * rate)) / rate
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, wave.size, chunk):
                part = wave[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(np.stack([part, part]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An MP4 (M4A) with one AAC track and no video."""
    with av.open(str(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=rate)
        sound.layout = "mono"
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*sound.encode(frame), *sound.encode()]:
            out.mux(packet)
    return path


def write_long(path: Path, hours: float = 2.0) -> Path:
    """A long but tiny file: one 16×16 frame a minute for ``hours`` (the container says the duration)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(1, 60))
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(int(hours * 60)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture(i, 16, 16), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
