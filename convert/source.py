"""The conversion source: a local folder or a hub id, checked before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx.utils import tree_flatten

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.errors import ConversionError, Gemma4Error
from mlx_gemma4.loader import check_shapes, infer_layer_geometry, resolve_path, weight_files
from mlx_gemma4.weights import assistant_to_mlx_name, to_mlx_name

from .safetensors_io import TensorInfo, read_header

TARGET_TYPES = ("gemma4_unified", "gemma4_unified_text")
ASSISTANT_TYPE = "gemma4_unified_assistant"

# Files copied unchanged next to the weights when the source has them.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)


@dataclass
class Source:
    """A checked checkpoint: its config, its tensors (by MLX name) and the expected MLX shapes."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]  # MLX name → where the HF tensor lives
    expected: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def is_assistant(self) -> bool:
        """True for an MTP drafter checkpoint."""
        return self.config.get("model_type") == ASSISTANT_TYPE

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in the source."""
        return sum(t.nbytes for t in self.tensors.values())


def resolve_source(src: str | Path) -> Path:
    """A local folder, or a hub id downloaded (or found in the offline cache) with huggingface-hub."""
    try:
        return resolve_path(src)
    except Gemma4Error as e:
        raise ConversionError(str(e)) from e


def read_source_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a source checkpoint, checked for a model type this converter handles."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e
    model_type = config.get("model_type")
    if model_type not in (*TARGET_TYPES, ASSISTANT_TYPE):
        raise ConversionError(
            f"{folder}: model_type {model_type!r} is not a Gemma 4 unified checkpoint "
            f"(expected one of {', '.join((*TARGET_TYPES, ASSISTANT_TYPE))})"
        )
    if config.get("quantization"):
        raise ConversionError(f"{folder}: already an MLX quantized folder; convert from the original checkpoint")
    return config


def source_files(folder: Path) -> list[Path]:
    """The safetensors shards of the source (the loader's rule), problems as ConversionError."""
    return weight_files(folder, ConversionError)


def expected_shapes(config: dict[str, Any], tensors: dict[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    """MLX parameter shapes the config implies (model built lazily: nothing is allocated)."""
    if config.get("model_type") == ASSISTANT_TYPE:
        return assistant_shapes(config)
    from mlx_gemma4.model.gemma4 import Gemma4Model

    fake = {k: _Shaped(t.shape) for k, t in tensors.items()}  # the geometry helper reads only shapes
    try:
        cfg = ModelConfig.from_dict(infer_layer_geometry(config, fake))
    except Gemma4Error as e:
        raise ConversionError(str(e)) from e
    model = Gemma4Model(cfg)  # mlx is lazy: parameters are never evaluated here
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


class _Shaped:
    """Stands in for an array where only ``.shape`` is read."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def assistant_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of an MTP drafter (spec §8.1) from its config."""
    text = config.get("text_config") or {}
    try:
        h, inter, n = int(text["hidden_size"]), int(text["intermediate_size"]), int(text["num_hidden_layers"])
        heads, vocab = int(text["num_attention_heads"]), int(text["vocab_size"])
        head_dim = int(text["head_dim"])
        backbone = int(config.get("backbone_hidden_size", 3840))
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"config.json: assistant text_config lacks a size ({e})") from e
    types = text.get("layer_types") or ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    per_layer = {int(k): v for k, v in (text.get("per_layer_config") or {}).items() if str(k).isdigit()}
    out: dict[str, tuple[int, ...]] = {
        "embed_tokens.weight": (vocab, h),
        "norm.weight": (h,),
        "pre_projection.weight": (h, 2 * backbone),
        "post_projection.weight": (backbone, h),
    }
    global_dim = int(text.get("global_head_dim") or head_dim)
    for i in range(n):
        default = global_dim if types[i] == "full_attention" else head_dim
        d = int(per_layer.get(i, {}).get("head_dim", default))
        p = f"layers.{i}."
        out.update({
            p + "self_attn.q_proj.weight": (heads * d, h),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.o_proj.weight": (h, heads * d),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "layer_scalar": (1,),
        })
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            out[p + norm + ".weight"] = (h,)
    if config.get("use_ordered_embeddings"):
        out["masked_embedding.centroids.weight"] = (int(config.get("num_centroids", 2048)), h)
        out["masked_embedding.token_ordering"] = (vocab,)
    return out


def open_source(src: str | Path) -> Source:
    """Resolve, read and check a source checkpoint: every tensor known, none missing, every shape right."""
    folder = resolve_source(src)
    config = read_source_config(folder)
    rename = assistant_to_mlx_name if config.get("model_type") == ASSISTANT_TYPE else to_mlx_name
    tensors: dict[str, TensorInfo] = {}
    for f in source_files(folder):
        for name, info in read_header(f).items():
            new = rename(name)
            if new is not None:
                tensors[new] = info
    expected = expected_shapes(config, tensors)
    check_shapes(
        expected, {k: t.shape for k, t in tensors.items()}, f"{folder}: checkpoint", ConversionError,
        shown=lambda name: tensors[name].name,
    )
    return Source(folder, config, tensors, expected)
