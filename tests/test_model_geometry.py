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
