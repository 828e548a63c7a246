"""Encoder-free multimodal embedders: raw 48-px patches and raw 640-sample audio frames."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import VisionConfig
from .decoder import rms_norm


class MultimodalProjection(nn.Module):
    """No-scale RMSNorm then a bias-free Linear into the decoder's width (``embed_vision`` / ``embed_audio``)."""

    def __init__(self, in_dims: int, out_dims: int, eps: float):
        super().__init__()
        self.embedding_projection = nn.Linear(in_dims, out_dims, bias=False)
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return self.embedding_projection(rms_norm(x, None, self.eps))


class VisionEmbedder(nn.Module):
    """Patch LayerNorm → Dense → LayerNorm → + factorised (x, y) position table → LayerNorm.

    Works per patch, so callers pass only the valid (non-padding) patches.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        dim = cfg.mm_embed_dim
        # LayerNorm eps is the torch default 1e-5 in the reference (the modules are built without one).
        self.patch_ln1 = nn.LayerNorm(cfg.patch_dim, eps=1e-5)
        self.patch_dense = nn.Linear(cfg.patch_dim, dim)
        self.patch_ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.pos_embedding = mx.zeros((cfg.mm_posemb_size, 2, dim))
        self.pos_norm = nn.LayerNorm(dim, eps=1e-5)

    def __call__(self, patches: mx.array, positions: mx.array) -> mx.array:
        """patches (N, 6912) in [0, 1], positions (N, 2) as (x, y) → (N, mm_embed_dim)."""
        dtype = self.patch_ln2.weight.dtype  # LayerNorms stay float even when patch_dense is quantized
        # LN1 over raw pixels in float32: bf16 cannot represent k/255 and near-uniform patches are eps-sensitive.
        ln1 = self.patch_ln1
        x = mx.fast.layer_norm(
            patches.astype(mx.float32), ln1.weight.astype(mx.float32), ln1.bias.astype(mx.float32), ln1.eps
        ).astype(dtype)
        x = self.patch_ln2(self.patch_dense(x))
        pos = self.pos_embedding[positions[:, 0], 0] + self.pos_embedding[positions[:, 1], 1]
        return self.pos_norm(x + pos.astype(x.dtype))
