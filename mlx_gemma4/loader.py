"""Loading: a checkpoint folder (or hub id) → (model, processor or None).

The only module besides the converter that reads checkpoint files; the model itself never does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .config import ModelConfig
from .errors import ModelLoadError
from .generation.sampling import GenerationDefaults
from .hub import download, looks_like_hub_id
from .model.drafter import Drafter, check_compatible, drafter_config
from .model.gemma4 import Gemma4Model
from .quant import quantize_for_loading
from .weights import sanitize, sanitize_assistant

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def resolve_path(path_or_repo: str | Path) -> Path:
    """A local folder as is; otherwise a hub id fetched with huggingface-hub (HF_HUB_OFFLINE respected)."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise ModelLoadError(f"{p} is a file, not a checkpoint folder")
    text = str(path_or_repo)
    if not looks_like_hub_id(text):
        raise ModelLoadError(f"{text}: no such checkpoint folder")
    return download(text)


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a checkpoint folder)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def weight_files(folder: Path, error: type[Exception] = ModelLoadError) -> list[Path]:
    """The safetensors shards of a folder: those named by the index, else every *.safetensors.

    Problems raise ``error`` (the converter reports them as conversion errors)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise error(f"{index}: not a valid safetensors index ({e})") from e
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
    """Per-layer head_dim / KV heads from the weights, for configs that state neither form (spec §1.2)."""
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


def load_model(folder: Path, dtype: mx.Dtype | None = None) -> Gemma4Model:
    """Build the model described by ``folder/config.json`` and load its weights (checked)."""
    raw = read_config(folder)
    weights = read_weights(folder)
    try:
        config = ModelConfig.from_dict(infer_layer_geometry(raw, weights))
    except ModelLoadError as e:  # the config's own messages do not know which folder they are about
        raise ModelLoadError(f"{folder / 'config.json'}: {str(e).removeprefix('config.json: ')}") from e
    model = Gemma4Model(config)
    fill_weights(model, weights, config.quantization, dtype, "checkpoint")
    model.eval()
    # Sampling defaults, stop ids and suppressed tokens travel with the model (generation reads them).
    model.generation_defaults = GenerationDefaults.from_folder(folder, (config.eoi_token_id, config.eoa_token_id))
    return model


def load(path_or_repo: str | Path, dtype: mx.Dtype | None = None, with_processor: bool = True):
    """Load a checkpoint (folder or hub id) → ``(model, processor)``; processor is None without tokenizer files."""
    folder = resolve_path(path_or_repo)
    model = load_model(folder, dtype)
    processor = None
    if with_processor and all((folder / f).is_file() for f in _TOKENIZER_FILES):
        from .processing import Processor

        processor = Processor.from_pretrained(folder)
    return model, processor


def load_drafter(path_or_repo: str | Path, target: Gemma4Model | None = None, dtype: mx.Dtype | None = None):
    """Load an MTP drafter (``gemma4_unified_assistant``, HF or converted layout) → ``Drafter``, checked
    against ``target``."""
    folder = resolve_path(path_or_repo)
    raw = read_config(folder)
    cfg, backbone = drafter_config(raw)
    model = Drafter(cfg, backbone)
    fill_weights(model, read_weights(folder, sanitize_assistant), raw.get("quantization"), dtype, "drafter checkpoint")
    if target is not None:
        check_compatible(model, target)
    return model
