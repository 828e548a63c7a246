"""Audio → 640-sample frames at 16 kHz for the encoder-free audio projection.

Pipeline: decode (soundfile: WAV, FLAC, OGG, MP3, …) → float32 → mono (channel mean) → 16 kHz
(soxr) → clip to [−1, 1] → split into ≤ 30 s clips → frames of 640 samples, the last one zero-padded.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from ..errors import InputError
from . import sources
from .audio_checks import SNIFF_BYTES, check_wav_length, may_reach_mpg123, quiet_stderr
from .sources import check_path, open_binary

SAMPLE_RATE = 16_000
FRAME = 640  # samples per audio soft token (40 ms)
MAX_CLIP_FRAMES = 750  # 30 s: the processor's audio_seq_length, the longest clip the model was made for
RESAMPLE_QUALITY = "HQ"

# An array comes with its rate as (samples, rate); a bare array is taken to be 16 kHz, as in transformers.
AudioSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | tuple


@dataclass(frozen=True)
class ProcessedAudio:
    """One audio input: its clips (each ≤ the clip limit) as frame arrays."""

    clips: list[np.ndarray]  # each (frames, 640) float32
    duration_s: float  # of the 16 kHz waveform

    @property
    def frame_counts(self) -> list[int]:
        """Number of soft tokens of each clip."""
        return [c.shape[0] for c in self.clips]


def _name_object(source: object) -> str | None:
    if isinstance(source, np.ndarray):
        return f"audio array {source.shape}"
    return "audio (array, rate)" if isinstance(source, tuple) else None


def describe_source(source: object) -> str:
    """A short name for an audio source in error messages."""
    return sources.describe_source(source, "audio", _name_object)


def _decode(source: AudioSource, name: str) -> tuple[np.ndarray, int]:
    """Read a file or bytes with soundfile → ((samples, channels) float32, rate)."""
    if isinstance(source, (str, os.PathLike)):
        path = check_path(source, name)
        with open_binary(path, name) as fp:
            head = fp.read(SNIFF_BYTES)
            check_wav_length(fp, head, path.stat().st_size, name)
        target: object = str(path)  # soundfile opens lazily: a huge non-audio file costs one header read
    else:
        if len(source) == 0:
            raise InputError(f"{name}: empty audio data (0 bytes)")
        data = bytes(source)
        head = data[:SNIFF_BYTES]
        check_wav_length(io.BytesIO(data), head, len(data), name)
        target = io.BytesIO(data)
    try:
        with quiet_stderr(may_reach_mpg123(head)), sf.SoundFile(target) as f:
            declared, rate = f.frames, f.samplerate
            # float32 decoding scales integer PCM (8/16/24/32-bit) into [−1, 1).
            data = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        # For an unrecognised file libsndfile says it "does not exist": wrong for a file just opened here.
        detail = "" if "not exist" in e.error_string else f"; {e.error_string.strip().rstrip('.')}"
        raise InputError(
            f"{name}: not audio that can be decoded (unknown format or corrupt data{detail}); readable "
            "containers are WAV, FLAC, OGG (Vorbis/Opus), MP3 and the other formats of libsndfile"
        ) from e
    except (RuntimeError, TypeError, ValueError, OSError) as e:
        raise InputError(f"{name}: cannot decode audio ({e})") from e
    if data.shape[0] < declared:
        raise InputError(f"{name}: truncated audio ({data.shape[0]} of the {declared} frames it declares)")
    return data, int(rate)


def _from_array(source: np.ndarray | tuple, name: str) -> tuple[np.ndarray, int]:
    """Validate an in-memory waveform: (samples,) or (samples, channels), with an optional rate."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise InputError(f"{name}: pass audio arrays as (samples, sampling_rate)")
        array, rate = source
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise InputError(f"{name}: sampling rate must be a positive integer, got {rate!r}")
    else:
        array, rate = source, SAMPLE_RATE
    array = np.asarray(array)
    if array.dtype.kind not in "fiu" or array.ndim not in (1, 2):
        raise InputError(f"{name}: audio must be a 1-D or (samples, channels) numeric array")
    if array.dtype.kind in "iu":
        # Integer PCM scaled like soundfile does: full scale of the type maps to ±1.
        info = np.iinfo(array.dtype)
        array = (array.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    array = array.astype(np.float32, copy=False)
    return (array[:, None] if array.ndim == 1 else array), int(rate)


def load_audio(source: AudioSource, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any supported source to a mono float32 waveform in [−1, 1] at ``sample_rate``."""
    name = describe_source(source)
    if isinstance(source, (np.ndarray, tuple)):
        data, rate = _from_array(source, name)
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        data, rate = _decode(source, name)
    else:
        raise InputError(f"{name}: audio must be a file path, bytes, or a numpy array (optionally with its rate)")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"{name}: no audio samples")
    if not np.isfinite(data).all():
        raise InputError(f"{name}: audio contains NaN or infinite samples")
    # Channel mean in float64 so a stereo sum cannot lose precision, then back to float32.
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
        if mono.size == 0:
            raise InputError(f"{name}: too short to resample ({data.shape[0]} samples at {rate} Hz)")
    # Float files may exceed full scale and the resampler can overshoot near ±1; the model expects [−1, 1].
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def to_frames(waveform: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """(samples,) → (⌈samples/frame⌉, frame) float32, the last frame completed with zeros."""
    n = math.ceil(waveform.shape[0] / frame)
    out = np.zeros((n * frame,), dtype=np.float32)
    out[: waveform.shape[0]] = waveform
    return out.reshape(n, frame)


def split_waveform(waveform: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Consecutive pieces of at most ``max_samples`` samples (the last may be shorter)."""
    return [waveform[i : i + max_samples] for i in range(0, waveform.shape[0], max_samples)]


def process_audio(
    source: AudioSource,
    *,
    split: bool = True,
    max_clip_frames: int = MAX_CLIP_FRAMES,
    frame: int = FRAME,
    sample_rate: int = SAMPLE_RATE,
) -> ProcessedAudio:
    """Decode one audio input and cut it into frames; longer than the clip limit → several clips or an error."""
    waveform = load_audio(source, sample_rate=sample_rate)
    max_samples = max_clip_frames * frame
    duration = waveform.shape[0] / sample_rate
    if waveform.shape[0] > max_samples:
        if not split:
            limit = max_samples / sample_rate
            raise InputError(
                f"{describe_source(source)}: {duration:.1f} s of audio is longer than the {limit:g} s the model "
                f"takes per clip; allow splitting (split_audio=True) to send it as {limit:g} s clips, or trim it"
            )
        pieces = split_waveform(waveform, max_samples)
    else:
        pieces = [waveform]
    return ProcessedAudio([to_frames(p, frame) for p in pieces], duration)


def batch_clips(clips: list[np.ndarray], frame: int = FRAME) -> tuple[np.ndarray, np.ndarray]:
    """Stack clips right-padded with zero frames → features (B, F, frame) and mask (B, F), True = real."""
    longest = max(c.shape[0] for c in clips)
    features = np.zeros((len(clips), longest, frame), dtype=np.float32)
    mask = np.zeros((len(clips), longest), dtype=bool)
    for i, c in enumerate(clips):
        features[i, : c.shape[0]] = c
        mask[i, : c.shape[0]] = True
    return features, mask
