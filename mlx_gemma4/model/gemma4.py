"""The whole Gemma 4 unified model: token + multimodal embeddings → decoder → tied head."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.cache import KVCache, RotatingKVCache

from ..config import ModelConfig
from ..errors import InputError
from .decoder import TextModel
from .embedders import MultimodalProjection, VisionEmbedder
from .masks import MaskContext, attention_mask, cached_key_positions, padding_mask, vision_block_ids

# Modality → (config field of its soft-token id, embedding method, its input arrays in the method's order).
# The same modalities as mlx_gemma4.processing.modalities.MODALITIES (a test checks they agree); the model
# does not import processing, which would load the image/audio/video decoders. Video frames are images
# to the model: the same embedder, each frame a bidirectional block (see masks.vision_block_ids).
EMBEDDERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "image": ("image_token_id", "image_features", ("pixel_values", "image_position_ids")),
    "audio": ("audio_token_id", "audio_features", ("input_features", "input_features_mask")),
    "video": ("video_token_id", "image_features", ("pixel_values_videos", "video_position_ids")),
}


def _as_mx(x) -> mx.array | None:
    return None if x is None else (x if isinstance(x, mx.array) else mx.array(np.asarray(x)))


class Gemma4Model(nn.Module):
    """Gemma 4 unified: ``model(input_ids, pixel_values=…, …, cache=…)`` → logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        text = config.text_config
        self.language_model = TextModel(text)
        if config.vision_config is not None:
            vc = config.vision_config
            self.vision_embedder = VisionEmbedder(vc)
            self.embed_vision = MultimodalProjection(vc.output_proj_dims, text.hidden_size, vc.rms_norm_eps)
        if config.audio_config is not None:
            ac = config.audio_config
            self.embed_audio = MultimodalProjection(ac.audio_embed_dim, text.hidden_size, ac.rms_norm_eps)

    @property
    def layers(self) -> list:
        """Decoder layers (mlx-lm convention, used by its cache helpers)."""
        return self.language_model.layers

    def make_cache(self) -> list:
        """One KV cache per layer: sliding layers keep only the window, full layers everything."""
        text = self.config.text_config
        return [
            RotatingKVCache(max_size=text.sliding_window, keep=0) if t == "sliding_attention" else KVCache()
            for t in text.layer_types
        ]

    # -- embeddings -------------------------------------------------------------------------------

    def image_features(self, pixel_values, image_position_ids) -> mx.array:
        """Soft tokens of every valid patch of every image, in order: (total_patches, hidden)."""
        if not hasattr(self, "vision_embedder"):
            raise InputError("this checkpoint has no vision embedder: it cannot take images")
        pos = np.asarray(image_position_ids).reshape(-1, 2)
        valid = np.flatnonzero((pos != -1).all(axis=-1))  # padding rows are dropped before any compute
        patches = _as_mx(pixel_values)
        patches = patches.reshape(-1, patches.shape[-1])[mx.array(valid)]
        feats = self.vision_embedder(patches, mx.array(pos[valid].astype(np.int32)))
        return self.embed_vision(feats)

    def audio_features(self, input_features, input_features_mask) -> mx.array:
        """Soft tokens of every real audio frame, in order: (total_frames, hidden)."""
        if not hasattr(self, "embed_audio"):
            raise InputError("this checkpoint has no audio embedder: it cannot take audio")
        feats = _as_mx(input_features)
        frames = feats.reshape(-1, feats.shape[-1])
        if input_features_mask is not None:
            valid = np.flatnonzero(np.asarray(input_features_mask).reshape(-1))
            frames = frames[mx.array(valid)]
        return self.embed_audio(frames)

    def embed_inputs(self, input_ids, **arrays) -> mx.array:
        """Scaled token embeddings with each modality's soft tokens scattered into its placeholders.

        ``arrays`` are the processor's arrays by name (``pixel_values``, ``image_position_ids``,
        ``input_features``, ``input_features_mask``, ``pixel_values_videos``, ``video_position_ids``; None
        or absent when a modality is not in the prompt).
        """
        unknown = set(arrays) - {k for _, _, keys in EMBEDDERS.values() for k in keys}
        if unknown:
            raise InputError(f"unknown model input(s): {', '.join(sorted(unknown))}")
        cfg = self.config
        ids = _as_mx(input_ids)
        is_placeholder = mx.zeros(ids.shape, dtype=mx.bool_)
        for token_field, _, _ in EMBEDDERS.values():
            is_placeholder = is_placeholder | (ids == getattr(cfg, token_field))
        x = self.language_model.embed(mx.where(is_placeholder, cfg.text_config.pad_token_id, ids))
        host_ids = None
        for kind, (token_field, method, keys) in EMBEDDERS.items():
            given = [arrays.get(k) for k in keys]
            if given[0] is None:
                continue
            if host_ids is None:
                host_ids = np.asarray(ids).reshape(-1)
            slots = np.flatnonzero(host_ids == getattr(cfg, token_field))
            feats = getattr(self, method)(*given)
            if feats.shape[0] != slots.size:
                raise InputError(
                    f"{kind} features and {kind} tokens do not match: {slots.size} placeholder tokens, "
                    f"{feats.shape[0]} soft tokens"
                )
            b, t, h = x.shape
            flat = x.reshape(b * t, h)
            flat[mx.array(slots)] = feats.astype(x.dtype)
            x = flat.reshape(b, t, h)
        return x

    # -- forward ----------------------------------------------------------------------------------

    def __call__(
        self,
        input_ids,
        pixel_values=None,
        image_position_ids=None,
        input_features=None,
        input_features_mask=None,
        cache=None,
        *,
        pixel_values_videos=None,
        video_position_ids=None,
        inputs_embeds: mx.array | None = None,
        logits_to_keep: int = 0,
        return_hidden: bool = False,
        left_padding: mx.array | None = None,
    ):
        """Logits for the last ``logits_to_keep`` positions (0 = all); with ``return_hidden`` also the
        final-normed hidden states of every position.

        ``inputs_embeds`` (from ``embed_inputs``) lets a caller embed a prompt once and prefill it in
        chunks; ``input_ids`` are still needed for the vision-block masks. ``left_padding`` (B,) gives
        the number of padding tokens at the start of each row of a left-padded batch: their keys are
        masked out and each row's RoPE positions start at its first real token.
        """
        ids = _as_mx(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(
                ids, pixel_values=pixel_values, image_position_ids=image_position_ids, input_features=input_features,
                input_features_mask=input_features_mask, pixel_values_videos=pixel_values_videos,
                video_position_ids=video_position_ids,
            )
        if left_padding is not None:
            left_padding = _as_mx(left_padding).astype(mx.int32)
        h = self.language_model(inputs_embeds, self._mask_builder(ids, cache, left_padding), cache)
        kept = h if logits_to_keep <= 0 else h[:, -logits_to_keep:]
        logits = self.language_model.logits(kept)
        return (logits, h) if return_hidden else logits

    def _mask_builder(self, ids: mx.array, cache, left_padding: mx.array | None = None) -> MaskContext:
        """Masks by (num_keys, window), each built once per call; padding-aware when ``left_padding``."""
        s = ids.shape[1]
        offset = cache[0].offset if cache else 0
        text = self.config.text_config
        blocks = None
        if s > 1:
            blocks = (
                vision_block_ids(ids, (self.config.image_token_id, self.config.video_token_id))
                if text.use_bidirectional_attention == "vision"
                else mx.full(ids.shape, -1, dtype=mx.int32)
            )
        # The first cache of each kind: all layers of a kind hold the same positions, and the first one
        # is updated before any layer of its kind asks for a mask.
        reference: dict = {}
        for t, c in zip(text.layer_types, cache or [], strict=False):
            reference.setdefault(text.sliding_window if t == "sliding_attention" else None, c)

        def build(num_keys: int, window: int | None):
            if s == 1:
                if left_padding is None:
                    return None  # one new token: every cached key is visible (sliding caches hold the window)
                return padding_mask(cached_key_positions(reference[window], num_keys), left_padding)
            mask = attention_mask(blocks, offset, num_keys, window)
            if left_padding is None:
                return mask
            key_pos = (offset + s - num_keys) + mx.arange(num_keys)
            return mask & padding_mask(key_pos, left_padding, offset + mx.arange(s))

        return MaskContext(build, left_padding)
