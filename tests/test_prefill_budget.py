"""The prefill chunk shrinks as the context grows so the CPU attention scores stay under a fixed budget."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlx_gemma4.generation import prefill as prefill_mod
from mlx_gemma4.generation.prefill import chunk_bounds, prefill, scores_limit
from mlx_gemma4.loader import load
from mlx_gemma4.model.cache import make_cache
from tests.reference import PromptBuilder


def test_chunks_keep_scores_under_the_budget():
    heads, budget, offset = 16, 256 << 20, 1000
    ids = np.zeros((1, 40_000), np.int32)
    bounds = chunk_bounds(ids, (7,), 2048, size_at=scores_limit(offset, heads, 1, budget))
    sizes = np.diff(bounds)
    assert sizes[0] < 2048 and sizes[-1] < sizes[0]  # shrinks as the context grows
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        assert heads * (b - a) * (offset + b) * 4 <= budget
        if b < bounds[-1]:  # each chunk is as large as the budget allows (no needless small chunks)
            assert heads * (b - a + 1) * (offset + b + 1) * 4 > budget


def test_a_vision_block_is_still_never_split():
    ids = np.array([[1] * 10 + [7] * 50 + [1] * 10])
    bounds = chunk_bounds(ids, (7,), 2048, size_at=lambda start: 8)
    assert not any(10 < b < 60 for b in bounds) and 60 in bounds


def test_budgeted_prefill_gives_the_same_logits(tiny_ckpt, monkeypatch):
    model = load(tiny_ckpt.path, with_processor=False)[0]
    prompt = PromptBuilder(tiny_ckpt.ids, seed=5).text(20).image(4, 3).text(30).build()
    ids = prompt.input_ids.astype(np.int32)
    embeds = model.embed_inputs(ids, **{k: v for k, v in prompt.mlx_kwargs().items() if k != "input_ids"})
    whole, _ = prefill(model, ids, embeds, make_cache(model), 4096)
    seen = []
    real = prefill_mod.chunk_bounds
    monkeypatch.setattr(prefill_mod, "chunk_bounds", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(prefill_mod, "SCORES_BUDGET_BYTES", 4 * 4 * 8 * 40)  # 4 heads: chunks of a few tokens
    small, _ = prefill(model, ids, embeds, make_cache(model), 4096)
    if mx.default_device().type == mx.cpu:
        assert len(seen[-1]) > 6  # many chunks
    np.testing.assert_allclose(np.array(small), np.array(whole), atol=2e-5)
