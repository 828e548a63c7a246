"""Logits parity with the transformers reference (float32 and bfloat16) on tiny random checkpoints."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from mlx_gemma4.loader import load
from mlx_gemma4.model.cache import make_cache
from tests.reference import parity_cases, reference_greedy, reference_logits, with_dtype

FP32_TOL = 1e-3  # the reference's own float32-vs-float64 gap on such models is ~1e-5 .. 2e-4


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


@pytest.fixture(scope="module")
def cases(tiny_ckpt):
    return parity_cases(tiny_ckpt.ids, tiny_ckpt.config.text_config.sliding_window)


@pytest.mark.parametrize(
    "case",
    ["text", "image_longer_than_window", "audio", "image_audio_text", "two_images", "longer_than_three_windows"],
)
def test_float32_logits_match_reference(model, tiny_ckpt, cases, case):
    prompt = cases[case]
    ours = np.array(model(**prompt.mlx_kwargs()))
    ref = reference_logits(tiny_ckpt, prompt)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= FP32_TOL


def test_window_and_blocks_matter(model, tiny_ckpt, cases):
    """Guard against a vacuous fixture: a causal-only image mask must be visibly wrong."""
    prompt = cases["image_longer_than_window"]
    ref = reference_logits(tiny_ckpt, prompt)
    ids = prompt.input_ids.copy()
    kw = prompt.mlx_kwargs()
    # Same embeddings, but tell the mask there are no vision blocks: plain causal attention.
    emb = model.embed_inputs(**kw)
    causal = np.array(model(np.where(ids == tiny_ckpt.ids["image"], 7, ids), inputs_embeds=emb))
    assert np.abs(causal - ref).max() > 1e-2


def test_greedy_continuation_matches_reference(model, tiny_ckpt, cases):
    prompt = cases["image_audio_text"]
    expected = reference_greedy(tiny_ckpt, prompt, 16)
    cache = make_cache(model)
    logits = model(**prompt.mlx_kwargs(), cache=cache, logits_to_keep=1)
    ours = []
    for _ in range(16):
        token = int(mx.argmax(logits[0, -1]).item())
        ours.append(token)
        logits = model(mx.array([[token]]), cache=cache)
    assert ours == expected


@torch.no_grad()
def test_bfloat16_error_is_no_worse_than_the_references_own(tiny_ckpt, cases):
    """bf16 compute: our error vs the float32 reference stays within 2× the reference's own bf16 error."""
    model16 = load(tiny_ckpt.path, dtype=mx.bfloat16)[0]
    ref16_ckpt = with_dtype(tiny_ckpt, torch.bfloat16)
    for name in ("text", "image_audio_text"):
        prompt = cases[name]
        ref32 = reference_logits(tiny_ckpt, prompt)
        ref16 = reference_logits(ref16_ckpt, prompt)
        ours = np.array(model16(**prompt.mlx_kwargs()).astype(mx.float32))
        ref_err = np.abs(ref16 - ref32).max()
        our_err = np.abs(ours - ref32).max()
        assert our_err <= 2 * ref_err + 1e-2, (name, our_err, ref_err)
