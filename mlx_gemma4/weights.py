"""Weight names: the one place that maps checkpoint tensor names to the MLX module tree.

The MLX tree mirrors the on-disk Hugging Face names minus the ``model.`` prefix:
``language_model.*``, ``vision_embedder.*``, ``embed_vision.*``, ``embed_audio.*``. Also accepted:
a text-only export (``model.layers.*``), the transformers module-tree names
(``model.embed_vision.patch_ln1`` …) and mlx-vlm's converted layout (``language_model.model.*``).

The MTP drafter (``gemma4_unified_assistant``) has its own tree: its HF names minus
``model.``, nothing else renamed — ``embed_tokens.weight`` (output head only), ``layers.N.self_attn.
{q_proj,q_norm,o_proj}``, ``layers.N.mlp.*``, the four ``layers.N.*_layernorm``, ``layers.N.layer_scalar``,
``norm.weight``, ``pre_projection.weight``, ``post_projection.weight`` (and ``masked_embedding.*`` when
``use_ordered_embeddings``). ``assistant_to_mlx_name`` maps them; ``mlx_gemma4/model/drafter.py`` builds its
modules under exactly these paths, so converted drafter folders load with plain ``model.update``.
"""

from __future__ import annotations

# (prefix in a checkpoint, prefix in the MLX tree), first match wins; order matters.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    # transformers module-tree names (a model saved without the conversion mapping)
    ("model.embed_vision.multimodal_embedder.", "embed_vision."),
    ("model.embed_vision.patch_", "vision_embedder.patch_"),
    ("model.embed_vision.pos_", "vision_embedder.pos_"),
    # Hugging Face on-disk names
    ("model.language_model.", "language_model."),
    ("model.vision_embedder.", "vision_embedder."),
    ("model.embed_vision.", "embed_vision."),
    ("model.embed_audio.", "embed_audio."),
    # text-only export (Gemma4UnifiedForCausalLM)
    ("model.", "language_model."),
    # mlx-vlm layout
    ("language_model.model.", "language_model."),
    ("language_model.", "language_model."),
    ("vision_embedder.", "vision_embedder."),
    ("embed_vision.", "embed_vision."),
    ("embed_audio.", "embed_audio."),
)

# Tensors a checkpoint may carry that the MLX model recomputes or does not need.
_DROPPED_SUFFIXES = ("rotary_emb.inv_freq", "_inv_freq", "embed_scale")
_DROPPED_NAMES = ("lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight")


def to_mlx_name(name: str) -> str | None:
    """MLX parameter path for a checkpoint tensor name, or None when the tensor is not used."""
    if name in _DROPPED_NAMES or name.endswith(_DROPPED_SUFFIXES):
        return None
    if name.startswith("lm_head.") or ".lm_head." in name:
        return None  # tied head: the embedding is the head
    for src, dst in _PREFIX_RULES:
        if name.startswith(src):
            return dst + name[len(src):]
    return name  # unknown: left as is, so the loader reports it by its own name


def to_hf_name(mlx_name: str) -> str:
    """The Hugging Face on-disk name of an MLX parameter path (inverse of ``to_mlx_name``)."""
    return "model." + mlx_name


def sanitize(weights: dict) -> dict:
    """Rename a checkpoint's tensors to MLX paths, dropping those the model does not use."""
    out = {}
    for name, value in weights.items():
        new = to_mlx_name(name)
        if new is not None:
            out[new] = value
    return out


# The Orbax converter may also write a ``final_norm`` the HF assistant module does not have.
_ASSISTANT_DROPPED = ("lm_head.weight", "model.final_norm.weight", "final_norm.weight")


def assistant_to_mlx_name(name: str) -> str | None:
    """MLX parameter path of an MTP drafter tensor (HF name minus ``model.``), or None when unused."""
    if name in _ASSISTANT_DROPPED or name.endswith(_DROPPED_SUFFIXES):
        return None
    return name[len("model."):] if name.startswith("model.") else name


def sanitize_assistant(weights: dict) -> dict:
    """Rename an MTP drafter checkpoint's tensors to its MLX paths, dropping those it does not use."""
    return {new: v for name, v in weights.items() if (new := assistant_to_mlx_name(name)) is not None}
