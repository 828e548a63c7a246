"""Loading: a checkpoint folder (or hub id) → (model, processor or None).

The only module besides the converter that reads checkpoint files; the model itself never does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .config import ModelConfig
from .errors import InputError, ModelLoadError
from .generation.sampling import GenerationDefaults
from .hub import download, folder_or_hub_id
from .jsonfile import read_json_object
from .model.drafter import Drafter, check_compatible, drafter_config
from .model.gemma4 import Gemma4Model
from .quant import quantize_for_loading
from .weights import sanitize, sanitize_assistant

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # a processor is built only when both are there
DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def resolve_path(path_or_repo: str | Path) -> Path:
    """A local folder as is; otherwise a hub id fetched with huggingface-hub (HF_HUB_OFFLINE respected)."""
    found = folder_or_hub_id(path_or_repo, ModelLoadError)
    return found if isinstance(found, Path) else download(found)


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a checkpoint folder)")
    return read_json_object(path, ModelLoadError)


def weight_files(folder: Path, error: type[Exception] = ModelLoadError) -> list[Path]:
    """The safetensors shards of a folder: those named by the index, else every *.safetensors.

    Problems raise ``error`` (the converter reports them as conversion errors)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index, error).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise error(f"{index}: not a valid safetensors index (no 'weight_map' of tensor name → file name)")
        names = sorted(set(weight_map.values()))
        bad = [n for n in names if Path(n).name != n]
        if bad:
            raise error(f"{index}: shard name {bad[0]!r} is not a file name in the folder")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise error(f"{folder}: shard {missing[0]} named by the index is missing")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise error(f"{folder}: no *.safetensors weights")
    return files


def read_weights(folder: Path, rename: Callable[[dict], dict] = sanitize) -> dict[str, mx.array]:
    """All tensors of a folder, lazily loaded, renamed to MLX paths."""
    weights: dict[str, mx.array] = {}
    for f in weight_files(folder):
        try:
            weights.update(mx.load(str(f)))
        except Exception as e:  # mlx raises plain RuntimeError/ValueError for corrupt files
            raise ModelLoadError(f"{f}: cannot read safetensors ({e})") from e
    return rename(weights)


def infer_layer_geometry(raw: dict[str, Any], weights: dict[str, mx.array]) -> dict[str, Any]:
    """Per-layer head_dim / KV heads from the weights, for configs that state neither form."""
    text = dict(raw.get("text_config", raw))
    if text.get("per_layer_config") or text.get("global_head_dim") is not None:
        return raw
    per_layer = {}
    for i in range(int(text.get("num_hidden_layers", 0))):
        q_norm = weights.get(f"language_model.layers.{i}.self_attn.q_norm.weight")
        k_proj = weights.get(f"language_model.layers.{i}.self_attn.k_proj.weight")
        if q_norm is None or k_proj is None:
            continue
        d = q_norm.shape[0]
        per_layer[str(i)] = {"head_dim": d, "num_key_value_heads": k_proj.shape[0] // d}
    text["per_layer_config"] = per_layer
    return {**raw, "text_config": text} if "text_config" in raw else text


def check_shapes(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    what: str = "checkpoint",
    error: type[Exception] = ModelLoadError,
    shown: Callable[[str], str] = lambda name: name,
) -> None:
    """Every expected tensor present with its exact shape and no unknown one; else ``error`` naming it.

    ``shown`` turns an MLX path into the name the user's files use (the converter reports HF names).
    """
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise error(f"{what} is missing tensor '{missing[0]}'{more}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise error(f"{what} has unexpected tensor '{shown(unexpected[0])}'{more} for this config")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            got = tuple(found[name])
            raise error(f"{what}: tensor '{shown(name)}' has shape {got}, the config implies {tuple(shape)}")


def check_weights(model: nn.Module, weights: dict[str, mx.array], what: str = "checkpoint") -> None:
    """Every model parameter present in ``weights`` with its exact shape (see ``check_shapes``)."""
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    check_shapes(expected, {k: tuple(v.shape) for k, v in weights.items()}, what)


def fill_weights(
    model: nn.Module, weights: dict[str, mx.array], quantization: dict | None, dtype: mx.Dtype | None, what: str
) -> None:
    """Quantize the layers the checkpoint holds quantized, check every tensor, then load (cast to dtype)."""
    if quantization:
        quantize_for_loading(model, quantization, set(weights))
    check_weights(model, weights, what)
    if dtype is not None:
        weights = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())


def on_cpu() -> bool:
    """Whether MLX computes on its CPU backend (no Metal or CUDA device is the default)."""
    return mx.default_device().type == mx.cpu


def parse_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    """A compute dtype given by name ("float32", "bfloat16", "float16") or as an MLX dtype; None stays None."""
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def default_dtype(quantized: bool) -> mx.Dtype | None:
    """The compute dtype used when none is asked for; None keeps the checkpoint's float dtype.

    A quantized model's activations take the dtype of its scales. MLX's CPU quantized matmul is
    ~8x slower with bfloat16 scales than with float32 ones (same bits read), so on the CPU backend
    quantized models compute in float32; on a GPU they compute in bfloat16, the fast native type.
    Dense checkpoints keep their own dtype on both (casting would change the bytes read per token).
    """
    if not quantized:
        return None
    return mx.float32 if on_cpu() else mx.bfloat16


def load_model(folder: Path, dtype: str | mx.Dtype | None = None) -> Gemma4Model:
    """Build the model described by ``folder/config.json`` and load its weights (checked).

    ``dtype``: the compute dtype (float weights, scales and activations); None = ``default_dtype``.
    """
    raw = read_config(folder)
    weights = read_weights(folder)
    try:
        config = ModelConfig.from_dict(infer_layer_geometry(raw, weights))
    except ModelLoadError as e:  # the config's own messages do not know which folder they are about
        raise ModelLoadError(f"{folder / 'config.json'}: {str(e).removeprefix('config.json: ')}") from e
    model = Gemma4Model(config)
    dtype = parse_dtype(dtype) or default_dtype(bool(config.quantization))
    fill_weights(model, weights, config.quantization, dtype, "checkpoint")
    model.eval()
    # Sampling defaults, stop ids and suppressed tokens travel with the model (generation reads them).
    model.generation_defaults = GenerationDefaults.from_folder(folder, (config.eoi_token_id, config.eoa_token_id))
    return model


def load(path_or_repo: str | Path, dtype: str | mx.Dtype | None = None, with_processor: bool = True):
    """Load a checkpoint (folder or hub id) → ``(model, processor)``; processor is None without tokenizer files.

    ``dtype`` overrides the compute dtype chosen for this device (see ``default_dtype``)."""
    folder = resolve_path(path_or_repo)
    model = load_model(folder, dtype)
    processor = None
    if with_processor and all((folder / f).is_file() for f in TOKENIZER_FILES):
        from .processing import Processor

        processor = Processor.from_pretrained(folder)
    return model, processor


def load_drafter(path_or_repo: str | Path, target: Gemma4Model | None = None, dtype: str | mx.Dtype | None = None):
    """Load an MTP drafter (``gemma4_unified_assistant``, HF or converted layout) → ``Drafter``, checked
    against ``target``."""
    folder = resolve_path(path_or_repo)
    raw = read_config(folder)
    cfg, backbone = drafter_config(raw)
    model = Drafter(cfg, backbone)
    quantization = raw.get("quantization")
    dtype = parse_dtype(dtype) or default_dtype(bool(quantization))
    fill_weights(model, read_weights(folder, sanitize_assistant), quantization, dtype, "drafter checkpoint")
    if target is not None:
        check_compatible(model, target)
    return model
