"""Bad video input: one clear InputError line naming the file, raised before anything reaches the model."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from PIL import Image

from mlx_gemma4.errors import InputError
from mlx_gemma4.processing import Processor
from mlx_gemma4.processing import video as video_mod
from mlx_gemma4.processing.video import VideoOptions, process_video
from tests.video_clips import write_audio_only, write_clip, write_long


def refused(source, match: str, options: VideoOptions | None = None, name: str | None = None) -> str:
    with pytest.raises(InputError, match=match) as info:
        process_video(source, options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(name if name is not None else str(source))
    return message


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("good") / "good.mp4")


def test_missing_empty_and_not_a_video(tmp_path):
    refused(tmp_path / "nope.mp4", "no such file")
    refused(tmp_path, "not a file")
    (tmp_path / "empty.mp4").write_bytes(b"")
    refused(tmp_path / "empty.mp4", r"empty file \(0 bytes\)")
    refused(b"", "empty video data", name="<0 bytes of video>")
    (tmp_path / "notes.txt").write_text("hello world\n" * 50)
    refused(tmp_path / "notes.txt", "not a video")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    refused(tmp_path / "noise.mp4", "not a video")
    Image.new("RGB", (64, 64)).save(tmp_path / "still.png")
    refused(tmp_path / "still.png", "a still image, not a video")
    refused("https://example.com/clip.mp4", "URLs are not fetched")


def test_truncated_files(tmp_path, good):
    data = good.read_bytes()
    # The index (moov) is written last: half a file has none.
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "half.mp4", "not a video")
    # Index first (faststart), frames cut off: the index lists frames that are not there.
    fast = tmp_path / "fast.mp4"
    with av.open(str(good)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    cut = fast.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(cut[: len(cut) * 2 // 3])
    refused(tmp_path / "cut.mp4", "truncated")


def test_no_video_track(tmp_path):
    refused(write_audio_only(tmp_path / "voice.m4a"), r"no video track \(an audio-only file\)")
    sf.write(tmp_path / "voice.wav", np.zeros(16000, np.float32), 16000)
    refused(tmp_path / "voice.wav", r"no video track \(an audio-only file\)")


def test_zero_frames(tmp_path):
    path = tmp_path / "zero.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    refused(path, "no frames")


def test_two_hours_refused_from_the_header_without_reading_frames(tmp_path, monkeypatch):
    path = write_long(tmp_path / "long.mp4", hours=2)

    def no_reading(*args, **kwargs):
        raise AssertionError("frames were read")

    monkeypatch.setattr(video_mod, "_frame_times", no_reading)
    refused(path, r"7200\.0 s of video is longer than the 60 s")


def test_pixel_guard_per_frame_before_decoding(good, monkeypatch):
    monkeypatch.setattr(video_mod, "_frame_times", lambda *a, **k: pytest.fail("frames were read"))
    message = refused(good, "pixels per frame is over the limit", VideoOptions(max_pixels=96 * 64 - 1))
    assert "96x64" in message
    # The default limit is the image path's.
    assert VideoOptions().max_pixels == video_mod.image_mod.DEFAULT_MAX_PIXELS


def test_bad_options():
    for kwargs, match in [(dict(num_frames=0), "num_frames"), (dict(fps=-1), "fps"), (dict(budget=71), "budget"),
                          (dict(num_frames=True), "num_frames")]:
        with pytest.raises(InputError, match=match):
            VideoOptions(**kwargs)


def test_bytes_source_and_processor_refuses_everything_on_one_bad_file(good, tmp_path):
    assert process_video(good.read_bytes()).frame_indices == process_video(good).frame_indices
    write_standin_processor(tmp_path / "processor")
    processor = Processor.from_pretrained(tmp_path / "processor")
    messages = [{"role": "user", "content": [{"type": "video", "path": str(good)},
                                             {"type": "video", "path": str(tmp_path / "missing.mp4")}]}]
    with pytest.raises(InputError, match="missing.mp4: no such file"):
        processor(messages)
