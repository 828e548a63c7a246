"""Synthetic checkpoints: random weights of the real geometry in the Hugging Face layout, streamed.

For sizing a machine and benchmarking before downloading 24 GB, and for the converter's memory
benchmark. Shapes come from the MLX model itself (built lazily, never allocated) or, for the MTP
drafter, from ``source.assistant_shapes``; names are the HF on-disk names. Values
are drawn a chunk at a time, so memory stays at one chunk whatever the size.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.errors import ConversionError
from mlx_gemma4.presets import BACKBONE_WIDTH, GEOMETRIES, VISION_WIDTH, text_preset
from mlx_gemma4.weights import to_hf_name

from .convert import FLOAT_DTYPES, shard_groups
from .outdir import staging_folder
from .safetensors_io import PlannedTensor, ShardLayout, ShardWriter, row_chunks
from .source import assistant_shapes
from .standin_tokenizer import MEDIA_TOKEN_FIELDS, write_standin_processor

SHARD_BYTES = 4 << 30


@dataclass
class SynthInfo:
    """What was written."""

    out: Path
    params: int
    nbytes: int


def hf_text_config(text: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A preset's text config in the form transformers 5.23 writes (full layers in ``per_layer_config``)."""
    s = dict(text)
    global_dim, global_kv = s.pop("global_head_dim"), s.pop("num_global_key_value_heads")
    width = len(str(s["num_hidden_layers"] - 1))
    per_layer = {f"{i:0{width}d}": {"head_dim": global_dim, "num_key_value_heads": global_kv}
                 for i, t in enumerate(s["layer_types"]) if t == "full_attention"}
    return {
        "model_type": "gemma4_unified_text", **s, "per_layer_config": per_layer,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
        "max_position_embeddings": 262144, "tie_word_embeddings": True, "use_bidirectional_attention": "vision",
        "num_kv_shared_layers": 0, "use_double_wide_mlp": False, "attention_bias": False,
        "attention_dropout": 0.0, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        **extra,
    }


def geometry_config(geometry: str, layers: int | None, dtype: str) -> dict[str, Any]:
    """The full ``config.json`` of a synthetic checkpoint."""
    if geometry not in GEOMETRIES:
        raise ConversionError(f"unknown geometry {geometry!r} (choose from {', '.join(GEOMETRIES)})")
    text = text_preset(geometry, layers)
    if geometry in BACKBONE_WIDTH:
        return {"model_type": "gemma4_unified_assistant", "architectures": ["Gemma4UnifiedAssistantForCausalLM"],
                "text_config": hf_text_config(text, num_kv_shared_layers=text["num_hidden_layers"]),
                "backbone_hidden_size": BACKBONE_WIDTH[geometry], "use_ordered_embeddings": False,
                "num_centroids": 2048, "centroid_intermediate_top_k": 32, "tie_word_embeddings": True,
                "dtype": dtype}
    width = VISION_WIDTH[geometry]
    return {
        "model_type": "gemma4_unified", "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "text_config": hf_text_config(text),
        "vision_config": {"model_type": "gemma4_unified_vision", "patch_size": 16, "pooling_kernel_size": 3,
                          "mm_embed_dim": width, "mm_posemb_size": 1120, "output_proj_dims": width,
                          "rms_norm_eps": 1e-6, "num_soft_tokens": 280},
        "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 640, "rms_norm_eps": 1e-6},
        **{field: real for field, real in MEDIA_TOKEN_FIELDS.values()},
        "eos_token_id": [1, 106], "tie_word_embeddings": True, "dtype": dtype,
    }


def hf_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF on-disk tensor names and shapes of a config (no memory allocated)."""
    if config["model_type"] == "gemma4_unified_assistant":
        top = ("pre_projection.", "post_projection.", "masked_embedding.")
        return {(k if k.startswith(top) else "model." + k): v for k, v in assistant_shapes(config).items()}
    from mlx_gemma4.model.gemma4 import Gemma4Model

    model = Gemma4Model(ModelConfig.from_dict(config))  # lazy: parameters are never evaluated
    return {to_hf_name(k): tuple(v.shape) for k, v in tree_flatten(model.parameters())}


def random_rows(name: str, shape: tuple[int, ...], rows: int, key: mx.array, dtype: mx.Dtype) -> mx.array:
    """Plausible random values for ``rows`` rows of a tensor (norms near 1, matrices ~1/√fan_in)."""
    chunk = (rows, *shape[1:])
    if name.endswith("layer_scalar"):
        return mx.ones(chunk, dtype=dtype)
    if name.endswith(("q_norm.weight", "k_norm.weight")):  # tempered: attention scale is 1.0 (near-1 norms: chaos)
        return (2.5 / math.sqrt(shape[0]) * (1 + 0.1 * mx.random.normal(chunk, key=key))).astype(dtype)
    if "norm" in name or "_ln" in name:
        base = 0.0 if name.endswith(".bias") else 1.0
        return (base + 0.1 * mx.random.normal(chunk, key=key)).astype(dtype)
    if name.endswith(".bias") or "pos_embedding" in name:
        return (0.02 * mx.random.normal(chunk, key=key)).astype(dtype)
    if "token_ordering" in name:
        return mx.arange(rows, dtype=mx.int32)
    std = 0.02 if "embed_tokens" in name else 1 / math.sqrt(shape[-1])
    return mx.random.normal(chunk, dtype=dtype, key=key) * mx.array(std, dtype=dtype)


def write_random_tensor(writer: ShardWriter, t: PlannedTensor, seed: int) -> None:
    """Fill one planned tensor with random rows, a chunk at a time (memory stays at one chunk)."""
    for a, b in row_chunks(t.shape, t.dtype.size):
        # A key per (seed, tensor, chunk), stable across runs (unlike hash(), which is salted per process).
        key = mx.random.key(zlib.crc32(f"{seed}:{t.name}:{a}".encode()))
        rows = random_rows(t.name, t.shape, b - a, key, t.dtype)
        mx.eval(rows)
        writer.write_rows(t.name, a, rows)
    mx.clear_cache()


def write_side_files(folder: Path, config: dict[str, Any], weight_map: dict[str, str], total: int) -> None:
    """Index, config, generation config and the stand-in tokenizer / processor files."""
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    generation = {"bos_token_id": 2, "pad_token_id": 0, "eos_token_id": [1, 106, 50],
                  "suppress_tokens": [MEDIA_TOKEN_FIELDS["<audio|>"][1], MEDIA_TOKEN_FIELDS["<image|>"][1]],
                  "do_sample": True, "temperature": 1.0, "top_k": 64, "top_p": 0.95}
    for name, data in (("model.safetensors.index.json", index), ("config.json", config),
                       ("generation_config.json", generation)):
        (folder / name).write_text(json.dumps(data, indent=2) + "\n")
    write_standin_processor(folder, config)


def synthesize(
    out: str | Path, geometry: str = "12b", layers: int | None = None, dtype: str = "bfloat16", seed: int = 0,
    force: bool = False, progress: Callable[[int, int, str], None] | None = None, shard_bytes: int = SHARD_BYTES,
) -> SynthInfo:
    """Write a random HF-layout checkpoint (config, shards + index, stand-in tokenizer, generation config)."""
    if dtype not in FLOAT_DTYPES:
        raise ConversionError(f"--dtype must be one of {tuple(FLOAT_DTYPES)}, not {dtype!r}")
    if layers is not None and layers < 1:
        raise ConversionError("--layers must be at least 1")
    config = geometry_config(geometry, layers, dtype)
    shapes = hf_shapes(config)
    tensors = [PlannedTensor(n, mx.int32 if "token_ordering" in n else FLOAT_DTYPES[dtype], s)
               for n, s in shapes.items()]
    groups = shard_groups(tensors, shard_bytes)  # the converter's packing: a PlannedTensor has .nbytes too
    total, done, count = sum(t.nbytes for t in tensors), 0, 0
    weight_map: dict[str, str] = {}
    with staging_folder(Path(out).expanduser(), force, "synth", needed_bytes=total) as tmp:
        for n, group in enumerate(groups, start=1):
            fname = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
            writer = ShardWriter(tmp / fname, ShardLayout(group))
            try:
                for t in group:
                    count += 1
                    if progress:
                        progress(done, total, f"tensor {count}/{len(tensors)} {t.name}")
                    write_random_tensor(writer, t, seed)
                    weight_map[t.name] = fname
                    done += t.nbytes
            finally:
                writer.close()
        if progress:
            progress(done, total, "tokenizer")
        write_side_files(tmp, config, weight_map, total)
    if progress:
        progress(total, total, "")
    return SynthInfo(Path(out), sum(math.prod(s) for s in shapes.values()), total)
