"""Audio preprocessing vs. the reference ``Gemma4UnifiedAudioFeatureExtractor``.

The reference takes 16 kHz arrays and only frames them; decoding, downmixing and resampling are the
port's own (soundfile + soxr), checked here against what the files contain: exact samples for
16 kHz PCM/float files, and for resampled files a sine keeps its frequency and amplitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from transformers import Gemma4UnifiedAudioFeatureExtractor

from mlx_gemma4.processing import audio as audio_mod
from mlx_gemma4.processing.audio import batch_clips, load_audio, process_audio

FE = Gemma4UnifiedAudioFeatureExtractor()


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """A float64 sine wave."""
    t = np.arange(round(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t + phase)


def reference_frames(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Reference features and mask for 16 kHz waveforms."""
    out = FE(clips, return_tensors="np")
    return out["input_features"], out["input_features_mask"]


def assert_frames_match(waveforms: list[np.ndarray]) -> None:
    """The port's clips of each waveform, batched, equal the reference features and mask exactly."""
    clips = [audio_mod.to_frames(w) for w in waveforms]
    features, mask = batch_clips(clips)
    ref_features, ref_mask = reference_frames(waveforms)
    assert features.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(features, ref_features)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """Peak of the magnitude spectrum, refined by parabolic interpolation."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x)


@pytest.mark.parametrize(
    "rate,subtype",
    [(16000, "PCM_16"), (16000, "PCM_24"), (16000, "FLOAT"), (16000, "PCM_U8"), (16000, "PCM_32"), (16000, "DOUBLE")],
)
def test_16khz_wav_is_read_exactly(rate, subtype, tmp_path):
    x = sine(300, 1.23, rate, amp=0.6)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype=subtype)
    expected, _ = sf.read(path, dtype="float32")  # an independent decode of the same file
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    np.testing.assert_array_equal(wave, expected)
    assert np.abs(wave - x).max() < {"PCM_U8": 1 / 64, "PCM_16": 1e-4}.get(subtype, 1e-6)
    got = process_audio(path)
    assert got.frame_counts == [math.ceil(len(x) / 640)]
    assert_frames_match([wave])
    np.testing.assert_array_equal(got.clips[0], reference_frames([wave])[0][0])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 11025, 32000])
def test_resampling_keeps_sine_frequency_and_amplitude(rate, tmp_path):
    x = sine(440, 2.0, rate, amp=0.5)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    wave = load_audio(path)
    assert abs(len(wave) - 2.0 * 16000) <= 1
    assert abs(dominant_frequency(wave, 16000) - 440) < 0.01
    middle = wave[1600:-1600]  # away from the resampler's edge transients
    assert abs(np.sqrt(2 * np.mean(middle.astype(np.float64) ** 2)) - 0.5) < 1e-4
    # Against the ideal 16 kHz sine (same phase: both start at t = 0). Measured ≤ 5e-7 for every rate here.
    ideal = sine(440, 2.0, 16000, amp=0.5)[: len(wave)]
    assert np.abs(middle - ideal[1600:-1600]).max() < 5e-6
    assert_frames_match([wave])
    assert process_audio(path).frame_counts == [math.ceil(len(wave) / 640)]


def test_stereo_is_downmixed_to_channel_mean(tmp_path):
    left, right = sine(200, 1.0, 16000, 0.4), sine(500, 1.0, 16000, 0.3, phase=1.0)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    stored, _ = sf.read(path, dtype="float32")
    wave = load_audio(path)
    np.testing.assert_allclose(wave, stored.mean(axis=1), atol=1e-7)
    assert_frames_match([wave])


def test_stereo_48k_to_mono_16k(tmp_path):
    both = sine(1000, 1.5, 48000, 0.5)
    path = tmp_path / "st48.wav"
    sf.write(path, np.stack([both, both], 1), 48000, subtype="PCM_24")
    wave = load_audio(path)
    assert len(wave) == 24000
    assert abs(dominant_frequency(wave, 16000) - 1000) < 0.5


COMPRESSED = [("FLAC", "flac", "PCM_16", 44100), ("OGG", "ogg", "VORBIS", 44100), ("OGG", "opus", "OPUS", 48000),
              ("MP3", "mp3", None, 44100)]


@pytest.mark.parametrize("fmt,ext,subtype,rate", COMPRESSED)
def test_compressed_formats(fmt, ext, subtype, rate, tmp_path):
    x = sine(440, 1.0, rate, 0.5)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    wave = load_audio(path)
    # Lossy codecs add encoder delay/padding; the length stays within ~0.1 s and the tone is kept.
    assert abs(len(wave) - 16000) < 1600
    assert abs(dominant_frequency(wave, 16000) - 440) < 1.0
    assert np.abs(wave).max() <= 1.0
    assert_frames_match([wave])
    if fmt == "FLAC":  # lossless: exactly what a 44.1 kHz WAV with the same samples gives
        wav = tmp_path / "same.wav"
        sf.write(wav, sf.read(path, dtype="float32")[0], rate, subtype="FLOAT")
        np.testing.assert_array_equal(wave, load_audio(wav))


def test_shorter_than_one_frame():
    x = (sine(1000, 100 / 16000, 16000)).astype(np.float32)
    got = process_audio(x)
    assert got.frame_counts == [1]
    np.testing.assert_array_equal(got.clips[0][0, :100], x)
    assert not got.clips[0][0, 100:].any()  # completed with zeros
    assert_frames_match([x])


@pytest.mark.parametrize("n", [1, 3, 25])
def test_exact_multiple_of_frame_adds_no_frame(n):
    x = np.random.default_rng(n).uniform(-1, 1, n * 640).astype(np.float32)
    assert process_audio(x).frame_counts == [n]
    assert_frames_match([x])


def test_batch_of_different_lengths_pads_like_reference():
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in (16100, 640, 5000, 32000)]
    assert_frames_match(waves)


@pytest.mark.parametrize("seconds,expected", [(31.0, [750, 25]), (95.0, [750, 750, 750, 125]), (30.0, [750])])
def test_long_audio_is_split_into_30s_clips(seconds, expected, tmp_path):
    x = sine(250, seconds, 16000, 0.3)
    path = tmp_path / "long.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    got = process_audio(path)
    assert got.frame_counts == expected
    assert math.isclose(got.duration_s, seconds)
    wave = load_audio(path)
    pieces = [wave[i : i + 480_000] for i in range(0, len(wave), 480_000)]
    np.testing.assert_array_equal(np.concatenate(pieces), wave)  # nothing lost or repeated
    features, mask = batch_clips(got.clips)
    ref_features, ref_mask = reference_frames(pieces)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(features, ref_features)


def test_long_audio_at_44k_split_after_resampling(tmp_path):
    path = tmp_path / "long44.flac"
    sf.write(path, sine(300, 31.0, 44100, 0.3), 44100, format="FLAC")
    assert process_audio(path).frame_counts == [750, 25]


def test_in_memory_arrays():
    x = sine(440, 1.0, 16000, 0.5).astype(np.float32)
    np.testing.assert_array_equal(load_audio(x), x)
    np.testing.assert_array_equal(load_audio((x, 16000)), x)
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), pcm / 32768.0, atol=1e-7)
    wave = load_audio((sine(440, 1.0, 8000, 0.5), 8000))
    assert len(wave) == 16000 and abs(dominant_frequency(wave, 16000) - 440) < 0.5


def test_float_file_beyond_full_scale_is_clipped(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.array([0.0, 1.5, -2.0, 0.25]), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), np.array([0.0, 1.0, -1.0, 0.25], np.float32))
