"""MTP speculative decoding: greedy output equals plain greedy; sampling keeps the target's distribution."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from mlx_gemma4 import generate
from mlx_gemma4.errors import InputError
from mlx_gemma4.generation.sampling import SamplingParams, filtered_logprobs
from mlx_gemma4.generation.speculative import verify
from mlx_gemma4.loader import load, load_drafter
from tests.forced_drafter import ForcedDrafter
from tests.reference import PromptBuilder


def build_drafter_checkpoint(folder: Path, target_config, hidden: int = 32, seed: int = 0, scale: float = 0.05) -> Path:
    """A random ``gemma4_unified_assistant`` checkpoint in the HF layout (transformers 5.23 cannot build one)."""
    t = target_config.text_config
    sliding = t.layer_head_dims[t.layer_types.index("sliding_attention")]
    full = t.layer_head_dims[t.layer_types.index("full_attention")]
    kinds = ["sliding_attention"] * 3 + ["full_attention"]
    text = {
        "model_type": "gemma4_unified_text", "vocab_size": t.vocab_size, "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_hidden_layers": 4, "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "head_dim": sliding, "layer_types": kinds,
        "per_layer_config": {"3": {"head_dim": full, "num_key_value_heads": 1}}, "attention_k_eq_v": True,
        "num_kv_shared_layers": 4, "sliding_window": t.sliding_window, "rms_norm_eps": 1e-6,
        "final_logit_softcapping": None, "rope_parameters": t.rope_parameters,
    }
    config = {"model_type": "gemma4_unified_assistant", "text_config": text, "backbone_hidden_size": t.hidden_size,
              "use_ordered_embeddings": False, "tie_word_embeddings": True}
    rng = np.random.default_rng(seed)
    w = {}

    def rand(*shape, s=scale):
        return (s * rng.standard_normal(shape)).astype(np.float32)

    w["model.embed_tokens.weight"] = rand(t.vocab_size, hidden, s=1.0)
    w["model.norm.weight"] = 1 + rand(hidden, s=0.1)
    w["pre_projection.weight"] = rand(hidden, 2 * t.hidden_size)
    w["post_projection.weight"] = rand(t.hidden_size, hidden, s=0.5)
    for i, kind in enumerate(kinds):
        d = full if kind == "full_attention" else sliding
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rand(t.num_attention_heads * d, hidden, s=0.3)
        w[p + "self_attn.q_norm.weight"] = np.full((d,), 2.5 / np.sqrt(d), np.float32)
        w[p + "self_attn.o_proj.weight"] = rand(hidden, t.num_attention_heads * d, s=0.3)
        w[p + "mlp.gate_proj.weight"] = rand(2 * hidden, hidden, s=0.3)
        w[p + "mlp.up_proj.weight"] = rand(2 * hidden, hidden, s=0.3)
        w[p + "mlp.down_proj.weight"] = rand(hidden, 2 * hidden, s=0.3)
        w[p + "layer_scalar"] = np.ones((1,), np.float32)
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            w[p + norm + ".weight"] = 1 + rand(hidden, s=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(w, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


@pytest.fixture(scope="module")
def prompt(tiny_ckpt):
    # Longer than the sliding window (16), so verification runs on wrapped rotating caches.
    return PromptBuilder(tiny_ckpt.ids, seed=21).text(4).image(6, 4).text(3).audio(5000).text(3).build()


@pytest.fixture(scope="module")
def plain(model, prompt):
    return generate(model, None, prompt, max_tokens=40, temperature=0)


def test_random_drafter_greedy_equals_plain_greedy(model, prompt, plain, tmp_path):
    drafter = load_drafter(build_drafter_checkpoint(tmp_path / "drafter", model.config), model)
    out = generate(model, None, prompt, max_tokens=40, temperature=0, draft_model=drafter, num_draft_tokens=3)
    assert out.token_ids == plain.token_ids
    assert out.stats.draft_tokens > 0 and out.stats.target_steps < 40


@pytest.mark.parametrize("wrong_every", [0, 3, 7])
def test_partial_acceptance_greedy_equals_plain_greedy(model, prompt, plain, wrong_every):
    seq = prompt.input_ids[0].tolist() + plain.token_ids
    drafter = ForcedDrafter(seq, wrong_every, model.config.text_config.vocab_size)
    out = generate(model, None, prompt, max_tokens=40, temperature=0, draft_model=drafter, num_draft_tokens=4)
    assert out.token_ids == plain.token_ids
    if wrong_every == 0:
        assert out.stats.acceptance_rate == 1.0 and out.stats.tokens_per_step > 3.5
    else:
        assert 0 < out.stats.acceptance_rate < 1.0  # both accept and reject paths ran


def test_auto_mode_keeps_output(model, prompt, plain):
    seq = prompt.input_ids[0].tolist() + plain.token_ids
    out = generate(model, None, prompt, max_tokens=40, temperature=0, draft_model=ForcedDrafter(seq),
                   speculative="auto")
    assert out.token_ids == plain.token_ids


def test_rejection_sampling_preserves_target_distribution():
    """First emitted token of a round, over many draws, follows the target distribution p0."""
    mx.random.seed(0)
    logits = mx.array([[2.0, 1.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5]])
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
    lp = filtered_logprobs(logits, params)
    p0 = np.exp(np.array(lp[0]))
    counts = np.zeros(5)
    n = 4000
    for draft in (0, 3):  # a likely and an unlikely draft
        counts[:] = 0
        for _ in range(n):
            m, nxt = verify(lp, mx.array([draft]), params)
            counts[draft if int(m.item()) == 1 else int(nxt.item())] += 1
        freq = counts / n
        assert np.abs(freq - p0).max() < 4 * np.sqrt(p0 * (1 - p0) / n).max() + 1e-3


def test_speculation_refuses_quantized_cache_and_batch_settings(model, prompt, plain):
    seq = prompt.input_ids[0].tolist() + plain.token_ids
    with pytest.raises(InputError):
        generate(model, None, prompt, max_tokens=4, temperature=0, draft_model=ForcedDrafter(seq), kv_bits=8)
    with pytest.raises(InputError):
        generate(model, None, prompt, max_tokens=4, draft_model=ForcedDrafter(seq), repetition_penalty=1.2)
