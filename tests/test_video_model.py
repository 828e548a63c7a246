"""The model's video path vs the transformers reference model fed the reference processor's arrays.

Every frame is its own bidirectional block (the frames are separated by ``<image|>``, a timestamp and
``<|image>``), embedded like an image; chunked prefill never splits a frame.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from transformers.video_utils import default_sample_indices_fn, read_video_pyav

from mlx_gemma4 import generate, load
from mlx_gemma4.generation.prefill import chunk_bounds
from mlx_gemma4.processing import load_audio
from mlx_gemma4.processing.video import VideoOptions
from tests.reference import reference_processor
from tests.video_clips import write_clip

FP32_TOL = 1e-4
VID = 258884
FRAMES = 8  # 8 × 70 soft tokens keeps the reference's full forwards short; 32-frame prompts: test_video_processing
OPTIONS = VideoOptions(num_frames=FRAMES)


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    return load(tiny_ckpt.path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 480×336 is exactly 10×7 blocks = 70 tokens: no resize, so both processors give identical pixels
    # (a resize would differ by the Pillow-vs-torchvision rounding, which moves logits by ~1e-3).
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", size=(480, 336), tone_hz=330.0)


def _messages(clip, with_audio: bool) -> list[dict]:
    content = [{"type": "text", "text": "Look :"}, {"type": "video", "path": str(clip)}]
    if with_audio:
        content.append({"type": "audio"})
    return [{"role": "user", "content": [*content, {"type": "text", "text": "What happens here ?"}]}]


def reference_arrays(tiny_ckpt, clip, with_audio: bool, wave=None) -> dict[str, np.ndarray]:
    """The reference processor's arrays (frames from its own PyAV reader and sampler)."""
    ref = reference_processor(tiny_ckpt.path)
    frames, meta = read_video_pyav(str(clip), partial(default_sample_indices_fn, num_frames=FRAMES))
    text = ref.apply_chat_template(_messages(clip, with_audio), tokenize=False, add_generation_prompt=True)
    out = ref(text=text, videos=[frames], audio=[wave] if with_audio else None, return_tensors="np",
              add_special_tokens=False, videos_kwargs={"video_metadata": [meta], "do_sample_frames": False})
    return {k: np.asarray(v) for k, v in out.items() if k != "attention_mask"}


@torch.no_grad()
def reference_logits(tiny_ckpt, arrays: dict[str, np.ndarray], keep: int) -> np.ndarray:
    """The last ``keep`` positions' logits (all of them would be T × 262144 floats)."""
    kw = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return tiny_ckpt.model(**kw, use_cache=False, logits_to_keep=keep).logits.float().numpy()


def reference_greedy(tiny_ckpt, arrays: dict[str, np.ndarray], n: int, suppress, stops) -> list[int]:
    """n greedy tokens by full forwards, suppressed ids never chosen, ending at a stop id."""
    arrays, out = dict(arrays), []
    for _ in range(n):
        last = reference_logits(tiny_ckpt, arrays, 1)[0, -1]
        last[list(suppress)] = -np.inf
        out.append(int(last.argmax()))
        arrays["input_ids"] = np.concatenate([arrays["input_ids"], [[out[-1]]]], axis=1)
        arrays["mm_token_type_ids"] = np.concatenate([arrays["mm_token_type_ids"], [[0]]], axis=1)
        if out[-1] in stops:
            break
    return out


@pytest.mark.parametrize("with_audio", [False, True], ids=["video_text", "video_text_audio"])
def test_video_logits_match_the_reference(loaded, tiny_ckpt, clip, with_audio):
    model, processor = loaded
    wave = None
    if with_audio:
        sound = processor(_messages(clip, False), video_options=VideoOptions(num_frames=FRAMES, sound=True)).videos[0]
        wave = load_audio((sound.sound, sound.sound_rate))
    ours = processor(_messages(clip, with_audio), audio=[wave] if with_audio else None, video_options=OPTIONS)
    want = reference_arrays(tiny_ckpt, clip, with_audio, wave)
    np.testing.assert_array_equal(ours.input_ids, want["input_ids"])
    assert (ours.input_ids == VID).sum() == FRAMES * 70
    # The reference model gets the reference processor's own arrays; ours gets ours. The last 100
    # positions: the last frame (70 soft tokens), what follows it, and everything before through attention.
    # Same pixels up to the last bit: the reference's video path divides by 255 where its image path
    # (and ours, for both) multiplies by float32(1/255).
    np.testing.assert_allclose(ours.pixel_values_videos, want["pixel_values_videos"], rtol=0, atol=1e-7)
    got = np.array(model(**ours, logits_to_keep=100))
    ref = reference_logits(tiny_ckpt, want, 100)
    assert np.abs(got - ref).max() <= FP32_TOL


def test_frames_are_bidirectional_blocks(loaded, tiny_ckpt, clip):
    """Guard: with the frames' block structure hidden (plain causal masks) the logits visibly move."""
    model, processor = loaded
    inputs = processor(_messages(clip, False), video_options=OPTIONS)
    emb = model.embed_inputs(**inputs)
    ids = inputs.input_ids
    causal = np.array(model(np.where(ids == VID, 7, ids), inputs_embeds=emb, logits_to_keep=100))
    assert np.abs(causal - np.array(model(**inputs, logits_to_keep=100))).max() > 1e-2


def test_greedy_with_chunked_prefill_matches_the_reference(loaded, tiny_ckpt, clip):
    """16 greedy tokens, the prompt prefilled in chunks of at most 100 tokens (each frame is 70)."""
    model, processor = loaded
    inputs = processor(_messages(clip, False), video_options=OPTIONS)
    defaults = model.generation_defaults
    expected = reference_greedy(tiny_ckpt, reference_arrays(tiny_ckpt, clip, False), 16,
                                defaults.suppress_tokens, set(defaults.eos_token_ids))
    result = generate(model, processor, inputs, temperature=0, max_tokens=16, prefill_chunk=100)
    assert result.token_ids == expected
    # The chunks that prefill used: several, none cutting through a frame.
    cfg = model.config
    bounds = chunk_bounds(inputs.input_ids, (cfg.image_token_id, cfg.video_token_id), 100, split_last=True)
    is_video = inputs.input_ids[0] == VID
    assert len(bounds) > FRAMES and not any(is_video[b - 1] and is_video[b] for b in bounds[1:-1])
