"""The real 12B layer sizes (hidden 3840, 16×256 sliding heads, 1×512 global head, MLP 15360)."""

from __future__ import annotations

import numpy as np

from mlx_gemma4.loader import load
from tests.reference import PromptBuilder, reference_logits


def test_real_12b_layer_sizes_match_reference(real_geometry_ckpt):
    ck = real_geometry_ckpt
    model = load(ck.path)[0]
    attn = [layer.self_attn for layer in model.language_model.layers]
    assert [(a.n_heads, a.n_kv_heads, a.head_dim, a.k_eq_v) for a in attn] == [(16, 8, 256, False), (16, 1, 512, True)]
    assert model.language_model.layers[0].mlp.gate_proj.weight.shape == (15360, 3840)
    prompt = PromptBuilder(ck.ids, seed=3, max_soft_tokens=70).text(4).image(3, 2).text(3).audio(2000).text(2).build()
    ours = np.array(model(**prompt.mlx_kwargs()))
    ref = reference_logits(ck, prompt)
    assert np.abs(ours - ref).max() <= 1e-3


def test_one_default_layer_pattern():
    """config.default_layer_types is the pattern a config without layer_types gets, and the presets' pattern."""
    from mlx_gemma4.config import TextConfig, default_layer_types
    from mlx_gemma4.presets import text_preset

    full = [i for i, t in enumerate(default_layer_types(48)) if t == "full_attention"]
    assert full == [5, 11, 17, 23, 29, 35, 41, 47]
    assert default_layer_types(4) == ["sliding_attention"] * 3 + ["full_attention"]  # the last is always full
    preset = text_preset("12b")
    assert preset["layer_types"] == default_layer_types(48)
    no_pattern = {k: v for k, v in preset.items() if k != "layer_types"}
    assert TextConfig.from_dict(no_pattern).layer_types == preset["layer_types"]
