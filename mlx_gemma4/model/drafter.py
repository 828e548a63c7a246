"""The MTP drafter ``gemma4_unified_assistant``: a 4-layer model that reads the target's K/V.

Parameter names (the MLX tree; ``mlx_gemma4.weights.assistant_to_mlx_name`` maps the HF names to
them by dropping the ``model.`` prefix, so the converter writes exactly these):

    embed_tokens.weight                         (vocab, H)   own table, used only as the output head
    layers.N.self_attn.q_proj.weight            (heads·d, H) d = 256 sliding / 512 full
    layers.N.self_attn.q_norm.weight            (d,)
    layers.N.self_attn.o_proj.weight            (H, heads·d)
    layers.N.mlp.{gate_proj,up_proj}.weight     (I, H)
    layers.N.mlp.down_proj.weight               (H, I)
    layers.N.{input_layernorm,post_attention_layernorm,pre_feedforward_layernorm,
              post_feedforward_layernorm}.weight (H,)
    layers.N.layer_scalar                       (1,)
    norm.weight                                 (H,)
    pre_projection.weight                       (H, 2·backbone)  input: [target embedding, target hidden]
    post_projection.weight                      (backbone, H)    next "hidden" fed back into the drafter

There are no K/V projections: every layer attends to the K/V of the target's last layer of the same
type (already normed and rotated). The ordered-embedding head (``masked_embedding.*``) is not
implemented — the 12B assistant does not use it; a checkpoint with it is refused at load time.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import ASSISTANT_MODEL_TYPE, TextConfig
from ..errors import ModelLoadError
from .decoder import DecoderLayer, RMSNorm, Rope


class DraftAttention(nn.Module):
    """Query-only attention over shared K/V; no causal mask (all K/V lie in the past)."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_type = cfg.layer_types[layer_idx]
        self.n_heads = cfg.num_attention_heads
        self.head_dim = d = cfg.layer_head_dims[layer_idx]
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * d, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.o_proj = nn.Linear(self.n_heads * d, cfg.hidden_size, bias=False)
        self._rope = Rope(d, cfg.rope_parameters[self.layer_type])

    def __call__(self, x: mx.array, kv: tuple[mx.array, mx.array], position: int) -> mx.array:
        b, s, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, s, self.n_heads, -1)).transpose(0, 2, 1, 3)
        q = self._rope(q, position)
        k, v = kv
        out = mx.fast.scaled_dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), scale=1.0)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, s, -1))


class Drafter(nn.Module):
    """One draft step: (token, target hidden) → (draft logits, next hidden)."""

    def __init__(self, cfg: TextConfig, backbone_hidden_size: int):
        super().__init__()
        self.config = cfg
        self.window = cfg.sliding_window
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [DecoderLayer(cfg, i, attention=DraftAttention) for i in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_projection = nn.Linear(2 * backbone_hidden_size, cfg.hidden_size, bias=False)
        self.post_projection = nn.Linear(cfg.hidden_size, backbone_hidden_size, bias=False)

    def step(self, target_embed: mx.array, hidden: mx.array, shared_kv: dict, position: int):
        """(B, 1, backbone) scaled target embedding and hidden → logits (B, V), next hidden (B, 1, backbone)."""
        x = self.pre_projection(mx.concatenate([target_embed, hidden.astype(target_embed.dtype)], axis=-1))
        for layer in self.layers:
            x = layer(x, shared_kv[layer.self_attn.layer_type], position)
        n = self.norm(x)
        return self.embed_tokens.as_linear(n)[:, -1], self.post_projection(n)

    def draft(self, target, token: mx.array, hidden: mx.array, shared_kv: dict, position: int, k: int) -> mx.array:
        """k greedy draft tokens (B, k) after ``token`` (B,), as HF drafts (argmax even when sampling)."""
        # Sliding layers see the most recent W + 1 shared entries (HF's bidirectional sliding mask).
        sk, sv = shared_kv["sliding_attention"]
        kv = {**shared_kv, "sliding_attention": (sk[..., -(self.window + 1):, :], sv[..., -(self.window + 1):, :])}
        out = []
        h = hidden[:, None] if hidden.ndim == 2 else hidden
        for _ in range(k):
            emb = target.language_model.embed(token[:, None])
            logits, h = self.step(emb, h, kv, position)
            token = mx.argmax(logits, axis=-1).astype(mx.int32)
            out.append(token)
        return mx.stack(out, axis=1)


def drafter_config(raw: dict) -> tuple[TextConfig, int]:
    """(text config, backbone hidden size) of an assistant ``config.json``."""
    if raw.get("model_type") != ASSISTANT_MODEL_TYPE:
        raise ModelLoadError(
            f"not an MTP drafter: model_type {raw.get('model_type')!r} (want {ASSISTANT_MODEL_TYPE!r})")
    if raw.get("use_ordered_embeddings"):
        raise ModelLoadError("drafters with use_ordered_embeddings (centroid head) are not supported")
    text = dict(raw.get("text_config") or {})
    text["num_kv_shared_layers"] = 0  # every drafter layer reuses the target's K/V; no own K/V modules
    return TextConfig.from_dict(text), int(raw.get("backbone_hidden_size", 3840))


def check_compatible(drafter: Drafter, target) -> None:
    """The drafter's attention must fit the target's last sliding / full K/V and its hidden size."""
    t = target.config.text_config
    if drafter.pre_projection.weight.shape[-1] != 2 * t.hidden_size and not hasattr(drafter.pre_projection, "scales"):
        raise ModelLoadError("drafter backbone_hidden_size does not match the target's hidden size")
    for kind in ("sliding_attention", "full_attention"):
        target_dims = {d for d, lt in zip(t.layer_head_dims, t.layer_types, strict=True) if lt == kind}
        own = {layer.self_attn.head_dim for layer in drafter.layers if layer.self_attn.layer_type == kind}
        if own and own != target_dims:
            raise ModelLoadError(f"drafter {kind} head_dim {own} does not match the target's {target_dims}")

