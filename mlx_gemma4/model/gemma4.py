"""The whole Gemma 4 unified model: token + multimodal embeddings → decoder → tied head."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import ModelConfig
from ..errors import InputError
from .cache import cached_key_positions
from .decoder import TextModel
from .embedders import MultimodalProjection, VisionEmbedder
from .masks import AttentionContext, attention_mask, padding_mask, vision_block_ids

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

    # -- embeddings -------------------------------------------------------------------------------

    def image_features(self, pixel_values, image_position_ids) -> mx.array:
        """Soft tokens of every valid patch of every image, in order: (total_patches, hidden)."""
        if not hasattr(self, "vision_embedder"):
            raise InputError("this checkpoint has no vision embedder: it cannot take images")
        pos = np.asarray(image_position_ids).reshape(-1, 2)
        valid = np.flatnonzero((pos != -1).all(axis=-1))  # padding rows are dropped before any compute
        patches = _as_mx(pixel_values)
        patches = patches.reshape(-1, patches.shape[-1])
        if valid.size < patches.shape[0]:  # a full image has no padding rows: no gathered copy of its pixels
            patches = patches[mx.array(valid)]
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
            if valid.size < frames.shape[0]:
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
        cache=None,
        *,
        inputs_embeds: mx.array | None = None,
        logits_to_keep: int = 0,
        return_hidden: bool = False,
        left_padding: mx.array | None = None,
        **arrays,
    ):
        """Logits for the last ``logits_to_keep`` positions (0 = all); with ``return_hidden`` also the
        final-normed hidden states of every position.

        ``arrays`` are the media arrays ``embed_inputs`` takes (pixel_values, input_features, …).
        ``inputs_embeds`` (from ``embed_inputs``) lets a caller embed a prompt once and prefill it in
        chunks; ``input_ids`` are still needed for the vision-block masks. ``left_padding`` (B,) gives
        the number of padding tokens at the start of each row of a left-padded batch: their keys are
        masked out and each row's RoPE positions start at its first real token. Host ids (a list or
        numpy array) are checked against the vocabulary.
        """
        host_ids = None if isinstance(input_ids, mx.array) else check_token_ids(input_ids, self.config)
        ids = _as_mx(input_ids if host_ids is None else host_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(ids, **arrays)
        if left_padding is not None:
            left_padding = _as_mx(left_padding).astype(mx.int32)
        h = self.language_model(inputs_embeds, self.attention_context(ids, cache, left_padding, host_ids), cache)
        kept = h if logits_to_keep <= 0 else h[:, -logits_to_keep:]
        logits = self.language_model.logits(kept)
        return (logits, h) if return_hidden else logits

    def attention_context(
        self, ids: mx.array, cache, left_padding: mx.array | None = None, host_ids: np.ndarray | None = None
    ) -> AttentionContext:
        """Positions and masks of one forward call (masks built once per (num_keys, window)).

        A multi-token chunk without vision tokens and without padding gets the fused kernel's causal
        mask wherever no sliding window cuts into the returned keys; anything else gets a boolean mask.
        """
        s = ids.shape[1]
        offset = cache[0].offset if cache else 0
        text = self.config.text_config
        vision = (self.config.image_token_id, self.config.video_token_id)
        bidirectional = text.use_bidirectional_attention == "vision"
        blocks = None
        if s > 1:
            if host_ids is None:
                host_ids = np.asarray(ids)  # multi-token calls only: one read-back per chunk, never per token
            if bidirectional and np.isin(host_ids, vision).any():
                blocks = vision_block_ids(ids, vision)
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
            if blocks is None and left_padding is None and (window is None or num_keys <= window):
                return "causal"
            mask = attention_mask(blocks if blocks is not None else mx.full(ids.shape, -1, mx.int32), offset,
                                  num_keys, window)
            if left_padding is None:
                return mask
            key_pos = (offset + s - num_keys) + mx.arange(num_keys)
            return mask & padding_mask(key_pos, left_padding, offset + mx.arange(s))

        return AttentionContext(offset, build, left_padding)


def check_token_ids(input_ids, config: ModelConfig) -> np.ndarray:
    """Host token ids (a list or numpy array) as an int32 array; InputError if one is outside the vocabulary.

    An out-of-range id would index past the embedding table (a crash, not an error), so ids are
    checked wherever they arrive from the host; ids already on the device are the caller's business.
    """
    ids = np.asarray(input_ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"token ids must be integers, got {ids.dtype}")
    vocab = config.text_config.vocab_size
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise InputError(f"token id {bad} is outside the vocabulary (0 to {vocab - 1})")
    return ids.astype(np.int32)
