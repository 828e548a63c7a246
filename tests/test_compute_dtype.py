"""Compute dtype per device: quantized models run in float32 on the CPU backend, bfloat16 on a GPU;
``dtype=`` overrides; the default keeps the greedy tokens of an explicit bfloat16 run."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_gemma4.convert.convert import ConvertOptions, convert

from mlx_gemma4 import generate
from mlx_gemma4.errors import InputError
from mlx_gemma4.loader import default_dtype, load, on_cpu, parse_dtype
from tests.reference import PromptBuilder

N = 6


@pytest.fixture(scope="module")
def q4(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint converted to 4 bits with bfloat16 scales (the converter's default)."""
    return convert(tiny_ckpt.path, tmp_path_factory.mktemp("q4") / "q4", ConvertOptions(bits=4)).out


def test_default_dtype_follows_the_backend():
    assert default_dtype(quantized=False) is None  # dense checkpoints keep their own dtype
    assert default_dtype(quantized=True) == (mx.float32 if on_cpu() else mx.bfloat16)


def test_dtype_names_are_parsed_and_bad_ones_rejected():
    assert parse_dtype("bfloat16") == mx.bfloat16 and parse_dtype(mx.float16) == mx.float16
    assert parse_dtype(None) is None
    with pytest.raises(InputError, match="float64"):
        parse_dtype("float64")


def test_quantized_default_and_override(q4):
    default = load(q4, with_processor=False)[0]
    forced = load(q4, dtype="bfloat16", with_processor=False)[0]
    gate = default.language_model.layers[0].mlp.gate_proj
    assert gate.scales.dtype == default_dtype(True)
    assert forced.language_model.layers[0].mlp.gate_proj.scales.dtype == mx.bfloat16
    assert forced.language_model.embed_tokens.scales.dtype == mx.bfloat16


@pytest.mark.parametrize("seed", [41, 42])
def test_default_dtype_keeps_greedy_tokens_of_bfloat16(q4, tiny_ckpt, seed):
    """Teacher-forced on the default run's greedy tokens, the bfloat16 run picks the same token at every
    step, or one whose logit ties with it within the two runs' measured logit difference (a random model's
    distributions are nearly flat, so bfloat16 rounding can flip exact near-ties)."""
    default = load(q4, with_processor=False)[0]
    bf16 = load(q4, dtype=mx.bfloat16, with_processor=False)[0]
    ids = PromptBuilder(tiny_ckpt.ids, seed=seed).text(12).build().input_ids.tolist()[0]
    tokens = generate(default, None, ids, max_tokens=N, temperature=0).token_ids
    assert len(tokens) == N
    forced = mx.array([ids + tokens[:-1]])
    la = np.array(default(forced).astype(mx.float32))[0, len(ids) - 1 :]
    lb = np.array(bf16(forced).astype(mx.float32))[0, len(ids) - 1 :]
    delta = float(np.abs(la - lb).max())
    assert delta <= 0.1 * max(1.0, float(np.abs(la).max()))  # bfloat16 rounding, not a different model
    for step, tok in enumerate(tokens):
        assert la[step].argmax() == tok
        assert lb[step].max() - lb[step, tok] <= 2 * delta, (step, tok)
