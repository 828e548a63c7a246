"""Real files through our processing and model vs the reference processor and model (tiny checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mlx_gemma4.loader import load
from tests.reference import mm_token_type_ids, reference_processor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUDGET = 70


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A real photo-like image saved at its budget-70 target size (432×336), the chart as shipped, and
    the example speech written as a 16-bit WAV file."""
    root = tmp_path_factory.mktemp("files")
    scene = Image.open(EXAMPLES / "scene.jpg").convert("RGB").resize((432, 336), Image.BICUBIC)
    scene.save(root / "scene_432x336.png")
    wave, rate = sf.read(EXAMPLES / "speech.ogg", dtype="float32")
    sf.write(root / "speech.wav", wave, rate, subtype="PCM_16")
    return {"scene": root / "scene_432x336.png", "chart": EXAMPLES / "chart.png", "speech": root / "speech.wav"}


def _messages(image: Path, audio: Path) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image", "path": str(image)},
        {"type": "text", "text": "Describe the picture and the sound ."},
        {"type": "audio", "path": str(audio)},
    ]}]


@torch.no_grad()
def _reference_logits(tiny_ckpt, messages, image: Path, audio: Path) -> np.ndarray:
    """The transformers processor (it decodes the image itself; audio as the 16 kHz waveform) + model."""
    ref = reference_processor(tiny_ckpt.path)
    text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    wave, rate = sf.read(audio, dtype="float32")
    assert rate == 16000
    inputs = ref(
        text=text, images=[Image.open(image)], audio=[wave], add_special_tokens=False, return_tensors="pt",
        images_kwargs={"max_soft_tokens": BUDGET},
    )
    kw = {k: inputs[k] for k in ("input_ids", "pixel_values", "image_position_ids", "input_features",
                                 "input_features_mask", "mm_token_type_ids")}
    return tiny_ckpt.model(**kw, use_cache=False).logits.float().numpy()


@pytest.fixture(scope="module")
def ours(tiny_ckpt):
    return load(tiny_ckpt.path)


def test_image_and_wav_files_give_the_reference_logits(tiny_ckpt, ours, files):
    model, processor = ours
    messages = _messages(files["scene"], files["speech"])
    inputs = processor(messages, image_budget=BUDGET)
    assert inputs.pixel_values.shape[0] == 1 and inputs.input_features_mask.sum() == np.ceil(5.737 * 16000 / 640)
    logits = np.array(model(**inputs))
    ref = _reference_logits(tiny_ckpt, messages, files["scene"], files["speech"])
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() <= 1e-3, np.abs(logits - ref).max()  # measured 2.0e-4


def test_resized_image_stays_close_to_the_reference(tiny_ckpt, ours, files):
    """The shipped chart needs a resize: PIL vs torchvision bicubic differ by ≤ 2/255 on < 2 % of values."""
    model, processor = ours
    messages = _messages(files["chart"], files["speech"])
    inputs = processor(messages, image_budget=BUDGET)
    assert (mm_token_type_ids(inputs.input_ids, tiny_ckpt.ids) == 1).sum() == 63  # 432×336 → 9 × 7 patches
    logits = np.array(model(**inputs))
    ref = _reference_logits(tiny_ckpt, messages, files["chart"], files["speech"])
    assert np.abs(logits - ref).max() <= 0.02, np.abs(logits - ref).max()  # measured 3.4e-3
