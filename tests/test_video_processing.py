"""Video input vs the transformers reference (``Gemma4UnifiedVideoProcessor`` + ``Gemma4UnifiedProcessor``).

The reference cannot open files here (it wants torchcodec), so it is given what its own PyAV reader
(``transformers.video_utils.read_video_pyav``, sequential decoding) returns with its own sampling
function (``default_sample_indices_fn``): frames + metadata. Rotated clips are given upright frames
(the reference ignores the display matrix). Clips are made by ``tests/video_clips.py``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from PIL import Image
from transformers.video_utils import default_sample_indices_fn, read_video_pyav

from mlx_gemma4.errors import InputError
from mlx_gemma4.processing import Processor, load_audio
from mlx_gemma4.processing.video import VideoOptions, process_video
from tests.reference import reference_processor
from tests.video_clips import picture, write_clip

BOI, EOI, VID, SOT = 255999, 258882, 258884, 105
CLIPS = {  # name → (write_clip arguments, our options, the reference's sampling arguments, rotation)
    "default_32": (dict(), VideoOptions(), dict(num_frames=32), 0),
    "fps_2": (dict(), VideoOptions(fps=2), dict(num_frames=None, fps=2), 0),
    "portrait": (dict(size=(64, 112)), VideoOptions(), dict(num_frames=32), 0),
    "landscape_320x240": (dict(size=(320, 240), frames=33), VideoOptions(), dict(num_frames=32), 0),
    "rotated_90": (dict(size=(64, 112), rotation=90), VideoOptions(), dict(num_frames=32), 90),
    "rotated_270": (dict(size=(112, 64), rotation=270), VideoOptions(), dict(num_frames=32), 270),
    "variable_rate": (dict(durations_ms=[50, 150, 100]), VideoOptions(), dict(num_frames=32), 0),
    "past_a_minute": (dict(frames=90, fps=1, size=(48, 48)), VideoOptions(sample_long=True), dict(num_frames=32), 0),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The stand-in processor (every digit is a piece of its vocabulary, so timestamps get real ids)."""
    path = tmp_path_factory.mktemp("video_standin")
    write_standin_processor(path)
    return path


@pytest.fixture(scope="module")
def ref(folder):
    return reference_processor(folder)


@pytest.fixture(scope="module")
def proc(folder):
    return Processor.from_pretrained(folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {name: write_clip(root / f"{name}.mp4", **args) for name, (args, *_rest) in CLIPS.items()}


def reference_video(path: Path, rotation: int = 0, **sampling):
    """Frames and metadata as the reference's PyAV reader and sampler make them (frames turned upright)."""
    frames, meta = read_video_pyav(str(path), partial(default_sample_indices_fn, **sampling))
    if rotation:
        frames = np.stack([np.rot90(f, rotation // 90) for f in frames])
    return frames, meta


def reference_inputs(ref, messages, video, audio=()):
    frames, meta = video
    text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return ref(
        text=text, videos=[frames], audio=list(audio) or None, return_tensors="np", add_special_tokens=False,
        videos_kwargs={"video_metadata": [meta], "do_sample_frames": False},
    )


def assert_pixels_close(ours: np.ndarray, want: np.ndarray) -> None:
    """The image path's tolerance: Pillow vs torchvision bicubic differ by ≤ 2/255 on ≤ 2 % of values."""
    assert ours.shape == want.shape
    diff = np.abs(ours - want)
    assert diff.max() <= 2 / 255 + 1e-6
    assert (diff > 1e-6).mean() <= 0.02


def message(path: Path, *extra) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video", "path": str(path)}, *extra,
                                         {"type": "text", "text": "What happens here ?"}]}]


@pytest.mark.parametrize("case", list(CLIPS))
def test_frames_timestamps_and_prompt_ids_equal_the_reference(proc, ref, clips, case):
    _, options, sampling, rotation = CLIPS[case]
    ours = proc(message(clips[case]), video_options=options)
    want_video = reference_video(clips[case], rotation, **sampling)
    want = reference_inputs(ref, message(clips[case]), want_video)
    video, meta = ours.videos[0], want_video[1]
    assert video.frame_indices == [int(i) for i in meta.frames_indices]
    assert video.timestamps == meta.timestamps
    assert video.fps == meta.fps and video.total_frames == meta.total_num_frames
    per_frame = (want["video_position_ids"] >= 0).all(-1).sum(-1)  # the reference's soft tokens per frame
    assert per_frame.tolist() == [video.num_soft_tokens] * len(video.frame_indices)
    np.testing.assert_array_equal(ours.input_ids, want["input_ids"])
    np.testing.assert_array_equal(ours.video_position_ids, want["video_position_ids"])
    assert_pixels_close(ours.pixel_values_videos, want["pixel_values_videos"])
    assert ours.pixel_values is None and ours.input_features is None


def test_prompt_text_has_one_stamped_block_per_frame(proc, clips):
    """The "mm:ss" stamps really reach the ids (no <unk>: every digit is in this vocabulary), minutes included."""
    ours = proc(message(clips["past_a_minute"]), video_options=VideoOptions(sample_long=True))
    video = ours.videos[0]
    assert video.stamps[0] == "00:00" and video.stamps[-1] == "01:27" and "01:01" in video.stamps
    ids = ours.input_ids[0].tolist()
    starts = [i for i, t in enumerate(ids) if t == BOI]
    assert len(starts) == 32
    for start, stamp in zip(starts, video.stamps, strict=True):
        stamp_ids = proc.tokenizer.encode(f"{stamp} ", add_special_tokens=False)  # "mm:ss <|image>"
        assert ids[start - len(stamp_ids) : start] == stamp_ids and proc.tokenizer.unk_token_id not in stamp_ids
        assert proc.tokenizer.decode(stamp_ids) == f"{stamp} "
        assert ids[start + 1 : start + 1 + video.num_soft_tokens] == [VID] * video.num_soft_tokens
        assert ids[start + 1 + video.num_soft_tokens] == EOI


def test_rotation_is_applied(clips):
    """The decoded frame is the upright picture, not the stored (sideways) one."""
    for case in ("rotated_90", "rotated_270"):
        width, height = CLIPS[case][0]["size"]
        video = process_video(clips[case], VideoOptions(num_frames=1))
        assert (video.size[0] > video.size[1]) == (height > width)
        # Undo the patchify of frame 0 and compare with the upright picture resized to the same size.
        rows, cols = video.size[0] // 48, video.size[1] // 48
        blocks = video.pixel_values[0, : rows * cols].reshape(rows, cols, 48, 48, 3)
        frame = blocks.transpose(0, 2, 1, 3, 4).reshape(video.size[0], video.size[1], 3)
        upright = np.asarray(Image.fromarray(picture(0, width, height)).resize(video.size[::-1])) / 255
        assert np.abs(frame - upright).mean() < 0.05, case
        assert np.abs(frame - upright[::-1, ::-1]).mean() > 0.1, case  # a half-turn off would be far


def test_short_clip_uses_every_frame(proc, ref, tmp_path):
    """Fewer frames than asked for: the reference raises; we take every frame (documented)."""
    path = write_clip(tmp_path / "short.mp4", frames=20)
    with pytest.raises(ValueError, match="exceeds total_num_frames"):
        reference_video(path, num_frames=32)
    ours = proc(message(path))
    assert ours.videos[0].frame_indices == list(range(20))
    want = reference_inputs(ref, message(path), reference_video(path, num_frames=20))
    np.testing.assert_array_equal(ours.input_ids, want["input_ids"])
    assert_pixels_close(ours.pixel_values_videos, want["pixel_values_videos"])


def test_sound_track_follows_the_frames_as_an_audio_item_would(proc, ref, tmp_path):
    """With sound on, the prompt equals the reference's for a video item followed by an audio item."""
    path = write_clip(tmp_path / "tone.mp4", tone_hz=440.0)
    ours = proc(message(path), video_options=VideoOptions(sound=True))
    video = ours.videos[0]
    assert video.sound is not None and video.sound_rate == 16000
    wave = load_audio((video.sound, video.sound_rate))
    assert abs(len(wave) / 16000 - 4.0) < 0.1  # the whole 4 s track
    want = reference_inputs(ref, message(path, {"type": "audio"}), reference_video(path, num_frames=32), [wave])
    np.testing.assert_array_equal(ours.input_ids, want["input_ids"])
    np.testing.assert_array_equal(ours.input_features, want["input_features"])
    np.testing.assert_array_equal(ours.input_features_mask, want["input_features_mask"])
    # Off by default: the reference prompt format has no sound for a video.
    silent = proc(message(path))
    assert silent.input_features is None and silent.videos[0].sound is None


def test_raw_prompt_and_videos_argument(proc, clips):
    """A raw prompt string with the placeholder, the file passed with videos=; counts are checked."""
    by_message = proc(message(clips["default_32"]))
    text = proc.render(message(clips["default_32"]))
    raw = proc(text, videos=str(clips["default_32"]))
    np.testing.assert_array_equal(raw.input_ids, by_message.input_ids)
    with pytest.raises(InputError, match="1 video placeholder"):
        proc(text, videos=[str(clips["default_32"])] * 2)


def test_over_the_cap_is_refused_unless_sampled_down(clips):
    with pytest.raises(InputError, match=r"90\.0 s of video is longer than the 60 s"):
        process_video(clips["past_a_minute"])
    with pytest.raises(InputError, match="more than the 60"):
        process_video(clips["default_32"], VideoOptions(num_frames=61))
    down = process_video(clips["past_a_minute"], VideoOptions(fps=1, sample_long=True))
    assert len(down.frame_indices) == 60 and down.frame_indices[-1] == 88  # spread over the whole clip
