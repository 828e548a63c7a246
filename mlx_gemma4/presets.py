"""Geometry presets: the real 12B model, its MTP drafter, and their tiny test-sized versions.

One place for the sizes used by ``gemma4 synth``, the test fixtures and the benchmarks. Plain dicts in
the field names of the Hugging Face ``text_config`` (no mlx, no files), so any layer can import them.
The tiny geometry keeps what makes a small random model able to reveal bugs: a sliding window (16)
shorter than an image block, and full-attention layers with their own head size and one KV head.
"""

from __future__ import annotations

from typing import Any

from .config import default_layer_types

# Text decoder sizes; ``full_every``: every n-th layer is a full-attention layer (the last one always is).
_TEXT: dict[str, dict[str, int]] = {
    "12b": dict(vocab_size=262144, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=1, sliding_window=1024),
    "tiny": dict(vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                 num_global_key_value_heads=1, sliding_window=16),
    "12b-assistant": dict(vocab_size=262144, hidden_size=1024, intermediate_size=8192, num_hidden_layers=4,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                          num_global_key_value_heads=1, sliding_window=1024),
    "tiny-assistant": dict(vocab_size=262144, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                           num_global_key_value_heads=1, sliding_window=16),
}
_FULL_EVERY = {"12b": 6, "tiny": 3, "12b-assistant": 4, "tiny-assistant": 4}
# Width of the vision embedder's projections (the real model: the decoder's hidden size).
VISION_WIDTH = {"12b": 3840, "tiny": 48}
# The drafter reads the backbone's hidden states: its width is the main model's hidden size.
BACKBONE_WIDTH = {"12b-assistant": 3840, "tiny-assistant": 64}
# A vocabulary small enough for real-size layers in tests and benchmarks, with the media ids moved into it.
SMALL_VOCAB = 1024
SMALL_VOCAB_MEDIA_IDS = dict(boi_token_id=1000, eoi_token_id=1001, image_token_id=1002, video_token_id=1003,
                             boa_token_id=1004, eoa_token_index=1005, audio_token_id=1006)
GEOMETRIES = tuple(_TEXT)
SOFTCAP = 30.0


def text_preset(geometry: str, layers: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A text config of ``geometry`` (sizes, layer pattern, K = V on full layers, soft-capping)."""
    if geometry not in _TEXT:
        raise ValueError(f"unknown geometry {geometry!r} (choose from {', '.join(GEOMETRIES)})")
    text: dict[str, Any] = dict(_TEXT[geometry])
    n = layers or text["num_hidden_layers"]
    text.update(num_hidden_layers=n, layer_types=default_layer_types(n, _FULL_EVERY[geometry]),
                attention_k_eq_v=True, final_logit_softcapping=SOFTCAP)
    text.update(overrides)
    return text
