"""The conversion source: a local folder or a hub id, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx.utils import tree_flatten

from mlx_gemma4.config import (
    ASSISTANT_MODEL_TYPE,
    SUPPORTED_MODEL_TYPES,
    TEXT_ONLY_MODEL_TYPES,
    ModelConfig,
    default_layer_types,
)
from mlx_gemma4.errors import ConversionError, ConversionInputError, Gemma4Error
from mlx_gemma4.generation.sampling import GenerationDefaults
from mlx_gemma4.jsonfile import read_json_object
from mlx_gemma4.loader import TOKENIZER_FILES, check_shapes, infer_layer_geometry, resolve_path, weight_files
from mlx_gemma4.processing.prompt import check_chat_template
from mlx_gemma4.weights import assistant_to_mlx_name, to_mlx_name

from .safetensors_io import TensorInfo, read_header

TARGET_TYPES = (*SUPPORTED_MODEL_TYPES, *TEXT_ONLY_MODEL_TYPES)

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
# Reported when absent (the loader falls back to defaults); alternatives separated by " or ".
EXPECTED_SIDE_FILES = (*TOKENIZER_FILES, "chat_template.jinja or chat_template.json", "generation_config.json",
                       "processor_config.json or preprocessor_config.json")


@dataclass
class Source:
    """A checked checkpoint: its config, its tensors (by MLX name) and the expected MLX shapes."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, TensorInfo]  # MLX name → where the HF tensor lives
    expected: dict[str, tuple[int, ...]] = field(default_factory=dict)
    side_files: list[str] = field(default_factory=list)  # present in ``folder``, checked, copied to OUT
    missing: list[str] = field(default_factory=list)  # of EXPECTED_SIDE_FILES (none reported for a drafter)
    files: list[Path] = field(default_factory=list)  # every file the conversion reads (kept clear of OUT)

    @property
    def is_assistant(self) -> bool:
        """True for an MTP drafter checkpoint."""
        return self.config.get("model_type") == ASSISTANT_MODEL_TYPE

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in the source."""
        return sum(t.nbytes for t in self.tensors.values())


def resolve_source(src: str | Path) -> Path:
    """A local folder, or a hub id downloaded (or found in the offline cache) with huggingface-hub.

    A source that is not there is bad input (``ConversionInputError``); a hub that cannot be reached is not."""
    try:
        return resolve_path(src)
    except Gemma4Error as e:
        offline = type(e.__cause__).__name__ == "LocalEntryNotFoundError"
        raise (ConversionError if offline else ConversionInputError)(" ".join(str(e).split())) from e


def read_source_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a source checkpoint, checked for a model type this converter handles."""
    path = folder / "config.json"
    if not path.exists():
        raise ConversionInputError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    config = read_json_object(path, ConversionInputError)
    model_type = config.get("model_type")
    if model_type not in (*TARGET_TYPES, ASSISTANT_MODEL_TYPE):
        raise ConversionInputError(
            f"{path}: model_type {model_type!r} is not a Gemma 4 unified checkpoint "
            f"(expected one of {', '.join((*TARGET_TYPES, ASSISTANT_MODEL_TYPE))})"
        )
    marker = config.get("mlx_gemma4")
    if config.get("quantization") or (isinstance(marker, dict) and marker.get("written_by") == "gemma4 convert"):
        raise ConversionInputError(f"{folder}: already an MLX converted folder; convert from the original checkpoint")
    if model_type not in TEXT_ONLY_MODEL_TYPES and not isinstance(config.get("text_config"), dict):
        raise ConversionInputError(f"{path}: 'text_config' is missing or not a JSON object")
    return config


def check_side_files(folder: Path) -> list[str]:
    """The side files of ``folder`` to copy, each checked first: JSON ones must hold a JSON object (and a
    generation config must have the value types generation reads), templates must be UTF-8 text."""
    present = []
    for name in SIDE_FILES:
        path = folder / name
        if not path.exists() and not path.is_symlink():
            continue
        if not path.is_file():
            raise ConversionInputError(f"{path}: not a file (a broken link or a folder)")
        if name.endswith(".json"):
            data = read_json_object(path, ConversionInputError)
            if name == "generation_config.json":
                try:
                    GenerationDefaults.from_dict(data)
                except (TypeError, ValueError) as e:
                    raise ConversionInputError(f"{path}: a field has the wrong type ({e})") from e
            elif name == "tokenizer.json":
                _check_tokenizer(path)
            elif name in ("tokenizer_config.json", "chat_template.json") and "chat_template" in data:
                check_chat_template(str(path), data["chat_template"], ConversionInputError)
        elif name.endswith(".jinja"):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConversionInputError(f"{path}: not a readable UTF-8 template ({e})") from e
            check_chat_template(str(path), text, ConversionInputError)
        elif path.stat().st_size == 0:
            raise ConversionInputError(f"{path}: empty file")
        present.append(name)
    return present


def _check_tokenizer(path: Path) -> None:
    """A tokenizer.json the tokenizers library cannot build (valid JSON of another shape) is refused here,
    not found out when the output is first used."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception with a serde message
        raise ConversionInputError(f"{path}: not a tokenizer the tokenizers library can load ({e})") from e


def missing_side_files(folder: Path, present: list[str]) -> list[str]:
    """Which of EXPECTED_SIDE_FILES the source lacks (a chat template inside tokenizer_config.json counts)."""
    missing = [want for want in EXPECTED_SIDE_FILES if not any(alt in present for alt in want.split(" or "))]
    template = "chat_template.jinja or chat_template.json"
    if (template in missing and "tokenizer_config.json" in present
            and read_json_object(folder / "tokenizer_config.json", ConversionInputError).get("chat_template")):
        missing.remove("chat_template.jinja or chat_template.json")
    return missing


def source_files(folder: Path) -> list[Path]:
    """The safetensors shards of the source (the loader's rule), problems as ConversionInputError."""
    return weight_files(folder, ConversionInputError)


def expected_shapes(config: dict[str, Any], tensors: dict[str, TensorInfo]) -> dict[str, tuple[int, ...]]:
    """MLX parameter shapes the config implies (model built lazily: nothing is allocated)."""
    if config.get("model_type") == ASSISTANT_MODEL_TYPE:
        return assistant_shapes(config)
    from mlx_gemma4.model.gemma4 import Gemma4Model

    fake = {k: _Shaped(t.shape) for k, t in tensors.items()}  # the geometry helper reads only shapes
    try:
        cfg = ModelConfig.from_dict(infer_layer_geometry(config, fake))
    except (Gemma4Error, TypeError, ValueError, AttributeError) as e:
        raise ConversionInputError(str(e) if isinstance(e, Gemma4Error) else f"config.json: invalid value ({e})") from e
    model = Gemma4Model(cfg)  # mlx is lazy: parameters are never evaluated here
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}


class _Shaped:
    """Stands in for an array where only ``.shape`` is read."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def assistant_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of an MTP drafter from its config."""
    text = config.get("text_config") or {}
    try:
        h, inter, n = int(text["hidden_size"]), int(text["intermediate_size"]), int(text["num_hidden_layers"])
        heads, vocab = int(text["num_attention_heads"]), int(text["vocab_size"])
        head_dim = int(text["head_dim"])
        backbone = int(config.get("backbone_hidden_size", 3840))
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionInputError(f"config.json: assistant text_config lacks a size ({e})") from e
    types = text.get("layer_types") or default_layer_types(n)
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
    """Resolve, read and check a source checkpoint: side files valid, every tensor known, none missing,
    every shape right. Problems are ``ConversionInputError`` naming the file."""
    folder = resolve_source(src)
    config = read_source_config(folder)
    side_files = check_side_files(folder)
    rename = assistant_to_mlx_name if config.get("model_type") == ASSISTANT_MODEL_TYPE else to_mlx_name
    tensors: dict[str, TensorInfo] = {}
    shards = source_files(folder)
    for f in shards:
        for name, info in read_header(f).items():
            new = rename(name)
            if new is not None:
                tensors[new] = info
    expected = expected_shapes(config, tensors)
    check_shapes(
        expected, {k: t.shape for k, t in tensors.items()}, f"{folder}: checkpoint", ConversionInputError,
        shown=lambda name: tensors[name].name,
    )
    missing = [] if config.get("model_type") == ASSISTANT_MODEL_TYPE else missing_side_files(folder, side_files)
    files = [folder / "config.json", *shards, *(folder / n for n in side_files)]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files.append(index)
    return Source(folder, config, tensors, expected, side_files, missing, files)
