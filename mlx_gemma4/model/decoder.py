"""The text decoder: sandwich-normed blocks, sliding + full attention, tied soft-capped head."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ..config import TextConfig
from .masks import AttentionContext


def rms_norm(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """RMSNorm computed in float32 whatever the activation dtype (as the reference); weight used as-is."""
    w = weight.astype(mx.float32) if weight is not None else None
    return mx.fast.rms_norm(x.astype(mx.float32), w, eps).astype(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm with a learnable weight (w, not 1 + w)."""

    def __init__(self, dims: int, eps: float = 1e-6):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self.weight, self.eps)


def rope_periods(head_dim: int, params: dict) -> tuple[float | None, mx.array | None]:
    """(base, periods) for ``mx.fast.rope``: default RoPE uses the base, proportional RoPE explicit periods.

    Proportional RoPE rotates only the first ``partial_rotary_factor · d/2`` frequency pairs,
    with exponents over the full head_dim; the others get an infinite period (no rotation).
    """
    theta = float(params.get("rope_theta", 10_000.0))
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return theta, None
    if rope_type != "proportional":
        raise ValueError(f"unsupported rope_type {rope_type!r}")
    factor = float(params.get("factor", 1.0))
    angles = int(float(params.get("partial_rotary_factor", 1.0)) * head_dim // 2)
    exponents = mx.arange(0, 2 * angles, 2, dtype=mx.float32) / head_dim
    rotated = factor * mx.power(mx.array(theta, dtype=mx.float32), exponents)
    still = mx.full((head_dim // 2 - angles,), mx.inf, dtype=mx.float32)
    periods = mx.concatenate([rotated, still])
    # Evaluated now: a lazy constant stays tied to the stream of the thread that built the model, and MLX
    # cannot evaluate it on another one (a model loaded on the main thread, run by the engine's model thread).
    mx.eval(periods)
    return None, periods


class Rope:
    """RoPE for one attention type (default or proportional), shared by the decoder and the drafter.

    A plain object, not a module: its periods are constants, not weights.
    """

    def __init__(self, head_dim: int, params: dict):
        self.head_dim = head_dim
        self.base, self.periods = rope_periods(head_dim, params)

    def __call__(self, x: mx.array, offset: int | mx.array) -> mx.array:
        """Rotate (B, heads, S, head_dim) at positions ``offset`` + 0..S-1 (``offset`` may be per row)."""
        return mx.fast.rope(
            x, self.head_dim, traditional=False, base=self.base, scale=1.0, offset=offset, freqs=self.periods
        )


class Attention(nn.Module):
    """Self-attention with q/k norms, scale 1.0, GQA; k_eq_v on full layers (V = raw K projection)."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_type = cfg.layer_types[layer_idx]
        self.is_sliding = self.layer_type == "sliding_attention"
        self.window = cfg.sliding_window if self.is_sliding else None
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.layer_kv_heads[layer_idx]
        self.head_dim = d = cfg.layer_head_dims[layer_idx]
        self.k_eq_v = cfg.attention_k_eq_v and not self.is_sliding
        self.eps = cfg.rms_norm_eps
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv_heads * d, bias=False)
        if not self.k_eq_v:
            self.v_proj = nn.Linear(h, self.n_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self._rope = Rope(d, cfg.rope_parameters[self.layer_type])

    def __call__(self, x: mx.array, ctx: AttentionContext, cache=None) -> mx.array:
        b, s, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, s, self.n_heads, -1)).transpose(0, 2, 1, 3)
        k_raw = self.k_proj(x).reshape(b, s, self.n_kv_heads, -1)
        v_raw = k_raw if self.k_eq_v else self.v_proj(x).reshape(b, s, self.n_kv_heads, -1)
        k = self.k_norm(k_raw).transpose(0, 2, 1, 3)
        v = rms_norm(v_raw, None, self.eps).transpose(0, 2, 1, 3)
        q = self._rope(q, ctx.rope_offset)
        k = self._rope(k, ctx.rope_offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        num_keys = (k[0] if isinstance(k, tuple) else k).shape[2]  # quantized caches return (packed, scales, biases)
        mask = ctx.mask(num_keys, self.window)
        # mlx-lm's dispatcher: quantized KV caches hand back (packed, scales, biases) triples.
        # Imported here: any mlx_lm import runs its __init__ (transformers), which `import mlx_gemma4` avoids.
        from mlx_lm.models.base import scaled_dot_product_attention

        out = scaled_dot_product_attention(q, k, v, cache, scale=1.0, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, s, -1))


class MLP(nn.Module):
    """gelu-tanh gated MLP."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Four sandwich norms; the learned ``layer_scalar`` multiplies the whole residual stream.

    ``attention`` is the attention class (the MTP drafter's layers attend to the target's K/V instead);
    the call's extra arguments go to it unchanged.
    """

    def __init__(self, cfg: TextConfig, layer_idx: int, attention: type[nn.Module] | None = None):
        super().__init__()
        h, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = (attention or Attention)(cfg, layer_idx)
        self.mlp = MLP(h, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.pre_feedforward_layernorm = RMSNorm(h, eps)
        self.post_feedforward_layernorm = RMSNorm(h, eps)
        self.layer_scalar = mx.ones((1,))

    def __call__(self, x: mx.array, *attention_args) -> mx.array:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), *attention_args))
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x * self.layer_scalar.astype(x.dtype)


class TextModel(nn.Module):
    """Embedding, decoder layers and final norm; the head is the tied embedding."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def embed(self, ids: mx.array) -> mx.array:
        """Token embeddings × √hidden, the scale rounded to the embedding dtype first (62.0 in bf16)."""
        x = self.embed_tokens(ids)
        return x * mx.array(math.sqrt(self.config.hidden_size), dtype=x.dtype)

    def __call__(self, x: mx.array, ctx: AttentionContext, cache=None) -> mx.array:
        """Run the decoder on input embeddings; returns final-normed hidden states."""
        cache = cache if cache is not None else [None] * len(self.layers)
        for layer, c in zip(self.layers, cache, strict=True):
            x = layer(x, ctx, c)
        return self.norm(x)

    def logits(self, h: mx.array) -> mx.array:
        """Tied head with the final soft-cap."""
        out = self.embed_tokens.as_linear(h)
        cap = self.config.final_logit_softcapping
        if cap:
            out = mx.tanh(out / cap) * cap
        return out
