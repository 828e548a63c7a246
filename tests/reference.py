"""Reference fixtures: tiny random Gemma 4 unified checkpoints built with transformers.

Everything that makes a random model able to reveal bugs is randomised: every norm weight, the
LayerNorm biases, ``layer_scalar`` and the position table. q/k norm weights are drawn around
2.5/√head_dim: with attention scale 1.0, weights near 1 make a random model chaotic (1e-6 of input
noise moves logits by 1e-3), which would hide real bugs behind float32 noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

from mlx_gemma4.presets import SMALL_VOCAB, SMALL_VOCAB_MEDIA_IDS, VISION_WIDTH, text_preset

IMAGE, AUDIO, VIDEO = 258880, 258881, 258884
BOI, EOI, BOA, EOA = 255999, 258882, 256000, 258883
BOS, SOT, EOT = 2, 105, 106

# Tiny: sliding window smaller than an image block, two full layers with their own head_dim and 1 KV head.
TINY_TEXT = text_preset("tiny")
TINY_VISION = dict(mm_embed_dim=VISION_WIDTH["tiny"], output_proj_dims=VISION_WIDTH["tiny"])
# The real 12B layer sizes with two layers (one sliding, one full) and a small vocabulary.
REAL_12B_TEXT = text_preset("12b", layers=2, vocab_size=SMALL_VOCAB)
SMALL_VOCAB_IDS = dict(SMALL_VOCAB_MEDIA_IDS)


@dataclass
class Checkpoint:
    """A saved reference checkpoint and its torch model (float32, eval mode)."""

    path: Path
    model: Gemma4UnifiedForConditionalGeneration
    config: Gemma4UnifiedConfig

    @property
    def ids(self) -> dict[str, int]:
        """Multimodal token ids of this checkpoint."""
        c = self.config
        return dict(
            image=c.image_token_id, video=c.video_token_id, audio=c.audio_token_id,
            boi=c.boi_token_id, eoi=c.eoi_token_id, boa=c.boa_token_id, eoa=c.eoa_token_index,
        )


def randomise(model: Gemma4UnifiedForConditionalGeneration, seed: int) -> None:
    """Randomise norms, biases, layer scalars and the position table (see module docstring)."""
    g = torch.Generator().manual_seed(seed)

    def around(t: torch.Tensor, centre: float, spread: float = 0.3) -> torch.Tensor:
        return centre * (1 + spread * (2 * torch.rand(t.shape, generator=g) - 1))

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(around(p, 2.5 / math.sqrt(p.shape[0])))
            elif "norm" in name or "_ln" in name:
                if name.endswith(".bias"):
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(around(p, 1.0))
            elif name.endswith("pos_embedding"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("patch_dense.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.copy_(around(b, 1.0, 0.5))


def build_checkpoint(
    folder: Path,
    text: dict | None = None,
    vision: dict | None = None,
    audio: dict | None = None,
    top: dict | None = None,
    seed: int = 0,
    with_processor: bool = False,
) -> Checkpoint:
    """Build, randomise and save a reference checkpoint in the Hugging Face layout."""
    torch.manual_seed(seed)
    config = Gemma4UnifiedConfig(
        text_config=dict(text or TINY_TEXT),
        vision_config=dict(vision if vision is not None else TINY_VISION),
        audio_config=dict(audio or {}),
        eos_token_id=[1, 106],
        **(top or {}),
    )
    model = Gemma4UnifiedForConditionalGeneration(config).eval()
    randomise(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 2, "pad_token_id": 0, "eos_token_id": [1, 106, 50],
                "suppress_tokens": [config.eoa_token_index, config.eoi_token_id],
                "do_sample": True, "temperature": 1.0, "top_k": 64, "top_p": 0.95,
            },
            indent=2,
        )
    )
    if with_processor:
        write_standin_processor(folder, config.to_dict())
    return Checkpoint(folder, model, config)


def reference_processor(folder: Path):
    """The transformers reference processor loaded back from a folder (``AutoProcessor.from_pretrained``)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder))


# -- inputs -----------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """Model inputs shaped like the transformers processor's outputs (numpy)."""

    input_ids: np.ndarray  # (1, T) int64
    pixel_values: np.ndarray | None = None  # (n_images, max_soft_tokens, 6912) float32
    image_position_ids: np.ndarray | None = None  # (n_images, max_soft_tokens, 2) int64
    input_features: np.ndarray | None = None  # (n_clips, F, 640) float32
    input_features_mask: np.ndarray | None = None  # (n_clips, F) bool

    def mlx_kwargs(self) -> dict:
        """Keyword arguments for our model (and transformers' model, via torch_kwargs)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class PromptBuilder:
    """Builds token sequences with image and audio blocks, and their pixel/feature arrays."""

    def __init__(self, ids: dict[str, int], seed: int = 0, max_soft_tokens: int = 70):
        self.ids, self.rng, self.budget = ids, np.random.default_rng(seed), max_soft_tokens
        self.tokens: list[int] = [BOS]
        self.images: list[tuple[np.ndarray, np.ndarray]] = []
        self.clips: list[np.ndarray] = []

    def text(self, n: int) -> PromptBuilder:
        """n ordinary word tokens."""
        self.tokens += self.rng.integers(10, 900, size=n).tolist()  # below every special id
        return self

    def image(self, cols: int, rows: int) -> PromptBuilder:
        """An image of cols × rows patches: boi + N soft tokens + eoi."""
        n = cols * rows
        pixels = np.zeros((self.budget, 6912), np.float32)
        pixels[:n] = self.rng.integers(0, 256, size=(n, 6912)).astype(np.float32) * np.float32(1 / 255)
        pos = np.full((self.budget, 2), -1, np.int64)
        pos[:n] = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2)
        self.images.append((pixels, pos))
        self.tokens += [self.ids["boi"]] + [self.ids["image"]] * n + [self.ids["eoi"]]
        return self

    def audio(self, samples: int) -> PromptBuilder:
        """A clip of raw 16 kHz samples: boa + ⌈samples/640⌉ soft tokens + eoa."""
        wave = (0.3 * self.rng.standard_normal(samples)).astype(np.float32)
        frames = -(-samples // 640)
        padded = np.zeros(frames * 640, np.float32)
        padded[:samples] = wave
        self.clips.append(padded.reshape(frames, 640))
        self.tokens += [self.ids["boa"]] + [self.ids["audio"]] * frames + [self.ids["eoa"]]
        return self

    def build(self) -> Prompt:
        """The prompt arrays (clips right-padded with zero frames, as the feature extractor does)."""
        p = Prompt(np.array([self.tokens], np.int64))
        if self.images:
            p.pixel_values = np.stack([i[0] for i in self.images])
            p.image_position_ids = np.stack([i[1] for i in self.images])
        if self.clips:
            longest = max(len(c) for c in self.clips)
            feats = np.zeros((len(self.clips), longest, 640), np.float32)
            mask = np.zeros((len(self.clips), longest), bool)
            for i, c in enumerate(self.clips):
                feats[i, : len(c)] = c
                mask[i, : len(c)] = True
            p.input_features, p.input_features_mask = feats, mask
        return p


def mm_token_type_ids(input_ids: np.ndarray, ids: dict[str, int]) -> np.ndarray:
    """Token types as the processor makes them: 1 image, 2 video, 3 audio soft tokens, 0 otherwise."""
    types = np.zeros_like(input_ids)
    types[input_ids == ids["image"]] = 1
    types[input_ids == ids["video"]] = 2
    types[input_ids == ids["audio"]] = 3
    return types


@torch.no_grad()
def reference_logits(ckpt: Checkpoint, prompt: Prompt) -> np.ndarray:
    """float32 logits of the transformers forward (dynamic path, no cache): (1, T, vocab)."""
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in prompt.mlx_kwargs().items()}
    kw["mm_token_type_ids"] = torch.from_numpy(mm_token_type_ids(prompt.input_ids, ckpt.ids))
    return ckpt.model(**kw, use_cache=False).logits.float().numpy()


@torch.no_grad()
def reference_greedy(ckpt: Checkpoint, prompt: Prompt, n: int, suppress: tuple[int, ...] = ()) -> list[int]:
    """n greedy tokens from the reference, by full forwards (exact, no cache subtleties); ``suppress``
    ids are never chosen (as generation does with the generation config's suppress_tokens)."""
    ids = prompt.input_ids
    out = []
    for _ in range(n):
        p = Prompt(ids, prompt.pixel_values, prompt.image_position_ids, prompt.input_features,
                   prompt.input_features_mask)
        last = reference_logits(ckpt, p)[0, -1]
        last[list(suppress)] = -np.inf
        nxt = int(last.argmax())
        out.append(nxt)
        ids = np.concatenate([ids, [[nxt]]], axis=1)
    return out


def parity_cases(ids: dict[str, int], window: int = 16) -> dict[str, Prompt]:
    """The issue's parity prompts; image blocks (6×4 = 24 tokens) are longer than the tiny window (16)."""
    p = lambda seed: PromptBuilder(ids, seed=seed)  # noqa: E731
    return {
        "text": p(1).text(24).build(),
        "image_longer_than_window": p(2).text(4).image(6, 4).text(6).build(),
        "audio": p(3).text(4).audio(16100).text(5).build(),
        "image_audio_text": p(4).text(3).image(5, 5).text(2).audio(7000).text(6).build(),
        "two_images": p(5).text(3).image(6, 4).text(4).image(3, 7).text(3).build(),
        "longer_than_three_windows": p(6).text(3 * window + 13).build(),
    }


def with_dtype(ckpt: Checkpoint, dtype: torch.dtype) -> Checkpoint:
    """A copy of the reference in another dtype (casting in place would round the shared fp32 weights)."""
    import copy

    return Checkpoint(ckpt.path, copy.deepcopy(ckpt.model).to(dtype), ckpt.config)
