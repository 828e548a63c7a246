"""KV caches: cached decoding and chunked prefill reproduce the full-sequence forward."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_gemma4.loader import load
from mlx_gemma4.model.cache import make_cache
from tests.reference import PromptBuilder


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


@pytest.fixture(scope="module")
def prompt(tiny_ckpt):
    # The second image starts far beyond the sliding window (16), so it is prefilled after the
    # rotating caches have wrapped; both image blocks are longer than the window.
    return (
        PromptBuilder(tiny_ckpt.ids, seed=11)
        .text(5)
        .image(6, 4)
        .text(20)
        .audio(5000)
        .text(10)
        .image(5, 5)
        .text(8)
        .build()
    )


def _block_spans(ids: np.ndarray, image_id: int) -> list[tuple[int, int]]:
    is_img = np.concatenate([[False], ids == image_id, [False]])
    edges = np.flatnonzero(np.diff(is_img.astype(int)))
    return list(zip(edges[::2], edges[1::2], strict=True))


def test_chunked_prefill_equals_full_forward(model, prompt, tiny_ckpt):
    ids = prompt.input_ids[0]
    full = np.array(model(**prompt.mlx_kwargs()))
    spans = _block_spans(ids, tiny_ckpt.ids["image"])
    bounds = [0, 3, spans[0][1] + 2, spans[1][0] - 1, spans[1][1], len(ids) - 2, len(ids)]
    assert not any(s < a < e for a in bounds for s, e in spans)  # no boundary inside an image block
    emb = model.embed_inputs(**prompt.mlx_kwargs())
    cache = make_cache(model)
    chunks = [
        np.array(model(ids[None, a:b], inputs_embeds=emb[:, a:b], cache=cache))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    assert np.abs(np.concatenate(chunks, axis=1) - full).max() <= 1e-4


def test_prefill_then_single_token_steps_equal_full_forward(model, prompt):
    kw = prompt.mlx_kwargs()
    cache = make_cache(model)
    model(**kw, cache=cache)
    seq = prompt.input_ids
    rng = np.random.default_rng(0)
    for _ in range(20):
        token = int(rng.integers(10, 900))
        seq = np.concatenate([seq, [[token]]], axis=1)
        step = np.array(model(mx.array([[token]]), cache=cache))[0, -1]
        full = np.array(model(seq, **{k: v for k, v in kw.items() if k != "input_ids"}, logits_to_keep=1))[0, -1]
        assert np.abs(step - full).max() <= 1e-4
    assert cache[0].offset == seq.shape[1]


def test_sliding_caches_are_bounded_by_the_window(model, prompt, tiny_ckpt):
    window = tiny_ckpt.config.text_config.sliding_window
    cache = make_cache(model)
    model(**prompt.mlx_kwargs(), cache=cache)
    for _ in range(5):
        model(mx.array([[42]]), cache=cache)
    types = tiny_ckpt.config.text_config.layer_types
    for c, t in zip(cache, types, strict=True):
        stored = c.keys.shape[2]
        if t == "sliding_attention":
            assert stored <= window
        else:
            assert stored >= prompt.input_ids.shape[1] + 5
