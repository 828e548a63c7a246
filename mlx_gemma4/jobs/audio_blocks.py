"""Long audio → blocks of at most 30 s cut in the quietest moment near each limit, so words stay whole.

Energy-based: the waveform's RMS over 20 ms frames, smoothed over 200 ms. Each block ends in the middle
of the latest quiet stretch (frames within 5 % of the way from the quietest frame to the median) after
its first 6 s, so blocks are long and cuts fall in pauses between words; audio that never gets quiet
there is cut at its quietest frame. numpy only.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02
SMOOTH_FRAMES = 10  # 200 ms: a pause, not the gap inside a word
SEARCH_FROM = 0.2  # a block is at least 20 % of the limit long (6 s of 30 s)
QUIET = 0.05  # a frame is quiet within this fraction of the way from the window's floor to its median


def frame_energy(wave: np.ndarray, rate: int) -> np.ndarray:
    """Smoothed RMS of each 20 ms frame."""
    hop = max(1, int(rate * FRAME_S))
    n = max(1, len(wave) // hop)
    frames = wave[: n * hop].reshape(n, hop) if len(wave) >= hop else wave[None, :]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    kernel = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
    return np.convolve(rms, kernel, mode="same") if len(rms) >= SMOOTH_FRAMES else rms


def _latest_pause(window: np.ndarray) -> int:
    """Index of the middle of the last run of quiet frames in ``window``."""
    floor = float(window.min())
    quiet = window <= floor + QUIET * (float(np.median(window)) - floor) + 1e-9
    last = int(np.flatnonzero(quiet)[-1])
    first = last
    while first > 0 and quiet[first - 1]:
        first -= 1
    return (first + last) // 2


def split_blocks(wave: np.ndarray, rate: int, max_s: float = 30.0) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering ``wave`` in order, each at most ``max_s`` long."""
    limit = int(max_s * rate)
    if len(wave) <= limit:
        return [(0, len(wave))]
    energy = frame_energy(wave, rate)
    hop = max(1, int(rate * FRAME_S))
    blocks, start = [], 0
    while len(wave) - start > limit:
        lo, hi = (start + int(limit * SEARCH_FROM)) // hop, (start + limit) // hop
        window = energy[lo:hi]
        cut = (lo + _latest_pause(window)) * hop + hop // 2 if len(window) else start + limit
        cut = min(max(cut, start + 1), start + limit)
        blocks.append((start, cut))
        start = cut
    blocks.append((start, len(wave)))
    return blocks


def srt_time(seconds: float) -> str:
    """SubRip timestamp ``HH:MM:SS,mmm``."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def to_srt(rows: list[dict]) -> str:
    """SubRip cues, one per block (rows with ``start``, ``end``, ``text``), numbered from 1."""
    cues = []
    for n, r in enumerate(rows, 1):
        cues.append(f"{n}\n{srt_time(r['start'])} --> {srt_time(r['end'])}\n{(r['text'] or '').strip()}\n")
    return "\n".join(cues)
