"""Model configuration: dataclasses read from a checkpoint's ``config.json``.

The transformers class defaults are NOT the 12B sizes, so every size is read from the file and a
missing one is an error. Per-layer attention geometry (full layers have their own head_dim and KV
head count) comes from ``per_layer_config`` or from ``global_head_dim`` / ``num_global_key_value_heads``;
the loader cross-checks it against the weight shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ModelLoadError

SUPPORTED_MODEL_TYPES = ("gemma4_unified",)
TEXT_ONLY_MODEL_TYPES = ("gemma4_unified_text",)
ASSISTANT_MODEL_TYPE = "gemma4_unified_assistant"  # the MTP drafter

_DEFAULT_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ModelLoadError(f"config.json: '{where}.{key}' is missing (it has no safe default)")
    return d[key]


def _layer_geometry(d: dict[str, Any], layer_types: list[str], head_dim: int, kv_heads: int,
                    k_eq_v: bool) -> tuple[list[int], list[int]]:
    """Per-layer (head_dims, kv_heads) from ``per_layer_config`` or the ``global_*`` fields."""
    head_dims = [head_dim] * len(layer_types)
    kv = [kv_heads] * len(layer_types)
    per_layer = d.get("per_layer_config")
    if per_layer:
        for key, override in per_layer.items():
            indices = [i for i, t in enumerate(layer_types) if t == key] if key in _DEFAULT_ROPE else [int(key)]
            for i in indices:
                head_dims[i] = int(override.get("head_dim", head_dims[i]))
                kv[i] = int(override.get("num_key_value_heads", kv[i]))
        return head_dims, kv
    global_head_dim = d.get("global_head_dim")
    global_kv = d.get("num_global_key_value_heads")
    for i, t in enumerate(layer_types):
        if t != "full_attention":
            continue
        if global_head_dim is not None:
            head_dims[i] = int(global_head_dim)
        if k_eq_v and global_kv is not None:
            kv[i] = int(global_kv)
    return head_dims, kv


def default_layer_types(n: int, full_every: int = 6) -> list[str]:
    """Gemma 4's layer pattern when a config lists none: every ``full_every``-th layer full attention, the rest
    sliding, and the last layer always full (as transformers forces it)."""
    types = ["full_attention" if (i + 1) % full_every == 0 else "sliding_attention" for i in range(n)]
    return [*types[:-1], "full_attention"] if types else types


@dataclass
class TextConfig:
    """The decoder (``text_config``)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    layer_types: list[str]
    # Per-layer attention geometry, resolved from per_layer_config / global_* fields.
    layer_head_dims: list[int]
    layer_kv_heads: list[int]
    sliding_window: int = 1024
    rms_norm_eps: float = 1e-6
    final_logit_softcapping: float | None = None
    attention_k_eq_v: bool = False
    use_bidirectional_attention: str | None = "vision"
    rope_parameters: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(_DEFAULT_ROPE))
    pad_token_id: int = 0
    max_position_embeddings: int | None = None  # the context length (None: not stated, not enforced)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextConfig:
        """Build from a ``text_config`` dict, resolving per-layer attention geometry."""
        where = "text_config"
        n_layers = int(_require(d, "num_hidden_layers", where))
        head_dim = int(_require(d, "head_dim", where))
        kv_heads = int(_require(d, "num_key_value_heads", where))
        layer_types = d.get("layer_types") or default_layer_types(n_layers)
        if len(layer_types) != n_layers:
            raise ModelLoadError(f"config.json: {len(layer_types)} layer_types for {n_layers} layers")
        if layer_types[-1] != "full_attention":
            layer_types = [*layer_types[:-1], "full_attention"]  # as transformers forces it
        unknown = set(layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise ModelLoadError(f"config.json: unsupported layer types {sorted(unknown)}")
        k_eq_v = bool(d.get("attention_k_eq_v", False))

        head_dims, kv = _layer_geometry(d, layer_types, head_dim, kv_heads, k_eq_v)

        rope = d.get("rope_parameters") or {}
        rope = {t: dict(rope.get(t) or _DEFAULT_ROPE[t]) for t in _DEFAULT_ROPE}
        if int(d.get("num_kv_shared_layers", 0) or 0) != 0:
            raise ModelLoadError("config.json: num_kv_shared_layers > 0 is not supported for the target model")
        # The MLP computes gelu with the tanh approximation; any other activation would load and be wrong.
        activation = d.get("hidden_activation", "gelu_pytorch_tanh")
        if activation != "gelu_pytorch_tanh":
            raise ModelLoadError(f"config.json: unsupported hidden_activation {activation!r} (gelu_pytorch_tanh only)")
        return cls(
            vocab_size=int(_require(d, "vocab_size", where)),
            hidden_size=int(_require(d, "hidden_size", where)),
            intermediate_size=int(_require(d, "intermediate_size", where)),
            num_hidden_layers=n_layers,
            num_attention_heads=int(_require(d, "num_attention_heads", where)),
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            layer_types=list(layer_types),
            layer_head_dims=head_dims,
            layer_kv_heads=kv,
            sliding_window=int(d.get("sliding_window", 1024)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            final_logit_softcapping=d.get("final_logit_softcapping"),
            attention_k_eq_v=k_eq_v,
            use_bidirectional_attention=d.get("use_bidirectional_attention", "vision"),
            rope_parameters=rope,
            pad_token_id=int(d.get("pad_token_id", 0) or 0),
            max_position_embeddings=int(d["max_position_embeddings"]) if d.get("max_position_embeddings") else None,
        )


@dataclass
class VisionConfig:
    """The encoder-free patch embedder (``vision_config``)."""

    patch_size: int = 16
    pooling_kernel_size: int = 3
    mm_embed_dim: int = 3840
    mm_posemb_size: int = 1120
    output_proj_dims: int = 3840
    rms_norm_eps: float = 1e-6
    num_soft_tokens: int = 280

    @property
    def model_patch_size(self) -> int:
        """Pixels per side of one soft-token patch (48)."""
        return self.patch_size * self.pooling_kernel_size

    @property
    def patch_dim(self) -> int:
        """Values per patch: 48 × 48 × 3 = 6912."""
        return self.model_patch_size**2 * 3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisionConfig:
        """Build from a ``vision_config`` dict (unknown keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class AudioConfig:
    """The raw-waveform audio projection (``audio_config``)."""

    audio_embed_dim: int = 640
    rms_norm_eps: float = 1e-6

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioConfig:
        """Build from an ``audio_config`` dict (``hidden_size`` is an alias of ``audio_embed_dim``)."""
        dim = d.get("audio_embed_dim", d.get("audio_samples_per_token", d.get("hidden_size", 640)))
        return cls(audio_embed_dim=int(dim), rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)))


@dataclass
class ModelConfig:
    """The whole checkpoint (top-level ``config.json``)."""

    text_config: TextConfig
    vision_config: VisionConfig | None
    audio_config: AudioConfig | None
    model_type: str = "gemma4_unified"
    boi_token_id: int = 255999
    eoi_token_id: int = 258882
    image_token_id: int = 258880
    video_token_id: int = 258884
    boa_token_id: int = 256000
    eoa_token_id: int = 258883
    audio_token_id: int = 258881
    eos_token_id: list[int] = field(default_factory=lambda: [1, 106])
    quantization: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a parsed ``config.json``; raises ModelLoadError for unsupported model types."""
        if not isinstance(d, dict):
            raise ModelLoadError("config.json: expected a JSON object {...}")
        model_type = d.get("model_type")
        if model_type in TEXT_ONLY_MODEL_TYPES:
            text, vision, audio = d, None, None
        elif model_type in SUPPORTED_MODEL_TYPES:
            text = d.get("text_config")
            if not isinstance(text, dict):
                raise ModelLoadError("config.json: 'text_config' is missing")
            vision, audio = d.get("vision_config"), d.get("audio_config")
            for key, section in (("vision_config", vision), ("audio_config", audio)):
                if section is not None and not isinstance(section, dict):
                    raise ModelLoadError(f"config.json: '{key}' must be a JSON object")
        else:
            raise ModelLoadError(
                f"unsupported model_type {model_type!r}: this package runs "
                f"{' / '.join(SUPPORTED_MODEL_TYPES + TEXT_ONLY_MODEL_TYPES)} checkpoints"
            )
        eos = d.get("eos_token_id", [1, 106])
        kw = {
            k: int(d[k])
            for k in (
                "boi_token_id", "eoi_token_id", "image_token_id", "video_token_id",
                "boa_token_id", "audio_token_id",
            )
            if d.get(k) is not None
        }
        eoa = d.get("eoa_token_index", d.get("eoa_token_id"))
        if eoa is not None:
            kw["eoa_token_id"] = int(eoa)
        return cls(
            text_config=TextConfig.from_dict(text),
            vision_config=VisionConfig.from_dict(vision) if vision else None,
            audio_config=AudioConfig.from_dict(audio) if audio else None,
            model_type=model_type,
            eos_token_id=list(eos) if isinstance(eos, (list, tuple)) else [int(eos)],
            quantization=d.get("quantization"),
            raw=d,
            **kw,
        )
