"""Synthetic checkpoints: random weights of the real geometry in the Hugging Face layout, streamed.

For sizing a machine and benchmarking before downloading 24 GB, and for the converter's memory
benchmark. Shapes come from the MLX model itself (built lazily, never allocated) or, for the MTP
drafter, from ``source.assistant_shapes``; names are the HF on-disk names (spec §2.2, §8.1). Values
are drawn a chunk at a time, so memory stays at one chunk whatever the size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.errors import ConversionError
from mlx_gemma4.weights import to_hf_name

from .convert import FLOAT_DTYPES
from .outdir import staging_folder
from .safetensors_io import PlannedTensor, ShardLayout, ShardWriter, row_chunks
from .source import assistant_shapes
from .standin_tokenizer import write_standin_processor

GEOMETRIES = ("12b", "12b-assistant", "tiny", "tiny-assistant")
SHARD_BYTES = 4 << 30
_TEXT_12B = dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=256, global_head_dim=512, num_global_key_value_heads=1)
_TEXT_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1)
_ASSISTANT_12B = dict(hidden_size=1024, intermediate_size=8192, num_hidden_layers=4, num_attention_heads=16,
                      num_key_value_heads=8, head_dim=256, global_head_dim=512, num_global_key_value_heads=1)
_ASSISTANT_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1)


@dataclass
class SynthInfo:
    """What was written."""

    out: Path
    params: int
    nbytes: int


def layer_types(n: int, period: int = 6) -> list[str]:
    """The 12B pattern (every 6th layer full), the last layer always full (as transformers forces it)."""
    types = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n)]
    types[-1] = "full_attention"
    return types


def text_config(sizes: dict[str, int], layers: int, period: int = 6, **extra: Any) -> dict[str, Any]:
    """A ``gemma4_unified_text`` config in the form transformers 5.23 writes (``per_layer_config``, spec §1.2)."""
    s = dict(sizes)
    global_dim, global_kv = s.pop("global_head_dim"), s.pop("num_global_key_value_heads")
    types = layer_types(layers, period)
    width = len(str(layers - 1))
    per_layer = {f"{i:0{width}d}": {"head_dim": global_dim, "num_key_value_heads": global_kv}
                 for i, t in enumerate(types) if t == "full_attention"}
    return {
        "model_type": "gemma4_unified_text", "vocab_size": 262144, **s, "num_hidden_layers": layers,
        "layer_types": types, "per_layer_config": per_layer, "attention_k_eq_v": True, "sliding_window": 1024,
        "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
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
    tiny = geometry.startswith("tiny")
    if geometry.endswith("assistant"):
        sizes = _ASSISTANT_TINY if tiny else _ASSISTANT_12B
        n = layers or 4
        text = text_config(sizes, n, period=4, num_kv_shared_layers=n)
        return {"model_type": "gemma4_unified_assistant", "architectures": ["Gemma4UnifiedAssistantForCausalLM"],
                "text_config": text, "backbone_hidden_size": 64 if tiny else 3840, "use_ordered_embeddings": False,
                "num_centroids": 2048, "centroid_intermediate_top_k": 32, "tie_word_embeddings": True,
                "dtype": dtype}
    sizes = _TEXT_TINY if tiny else _TEXT_12B
    n = layers or sizes["num_hidden_layers"]
    width = 48 if tiny else 3840
    return {
        "model_type": "gemma4_unified", "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "text_config": text_config(sizes, n),
        "vision_config": {"model_type": "gemma4_unified_vision", "patch_size": 16, "pooling_kernel_size": 3,
                          "mm_embed_dim": width, "mm_posemb_size": 1120, "output_proj_dims": width,
                          "rms_norm_eps": 1e-6, "num_soft_tokens": 280},
        "audio_config": {"model_type": "gemma4_unified_audio", "audio_embed_dim": 640, "rms_norm_eps": 1e-6},
        "boi_token_id": 255999, "eoi_token_id": 258882, "image_token_id": 258880, "video_token_id": 258884,
        "boa_token_id": 256000, "eoa_token_index": 258883, "audio_token_id": 258881,
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
    if name.endswith(("q_norm.weight", "k_norm.weight")):  # tempered: attention scale is 1.0 (spec §9.4)
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


def synthesize(
    out: str | Path, geometry: str = "12b", layers: int | None = None, dtype: str = "bfloat16", seed: int = 0,
    force: bool = False, progress: Callable[[int, int, str], None] | None = None, shard_bytes: int = SHARD_BYTES,
) -> SynthInfo:
    """Write a random HF-layout checkpoint (config, shards + index, stand-in tokenizer, generation config)."""
    if dtype not in FLOAT_DTYPES:
        raise ConversionError(f"--dtype must be one of {tuple(FLOAT_DTYPES)}, not {dtype!r}")
    if layers is not None and layers < 1:
        raise ConversionError("--layers must be at least 1")
    mx_dtype = FLOAT_DTYPES[dtype]
    config = geometry_config(geometry, layers, dtype)
    shapes = hf_shapes(config)
    tensors = [PlannedTensor(n, mx.int32 if "token_ordering" in n else mx_dtype, s) for n, s in shapes.items()]
    groups: list[list[PlannedTensor]] = [[]]
    for t in tensors:
        if groups[-1] and sum(x.nbytes for x in groups[-1]) + t.nbytes > shard_bytes:
            groups.append([])
        groups[-1].append(t)
    total = sum(t.nbytes for t in tensors)
    done, weight_map = 0, {}
    with staging_folder(Path(out).expanduser(), force, "synth", needed_bytes=total) as tmp:
        for n, group in enumerate(groups, start=1):
            fname = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
            writer = ShardWriter(tmp / fname, ShardLayout(group))
            try:
                for t in group:
                    if progress:
                        progress(done, total, t.name)
                    for a, b in row_chunks(t.shape, t.dtype.size):
                        # a key per (tensor, chunk): deterministic, independent of chunking elsewhere
                        key = mx.random.key(hash((seed, t.name, a)) & 0xFFFFFFFF)
                        rows = random_rows(t.name, t.shape, b - a, key, t.dtype)
                        mx.eval(rows)
                        writer.write_rows(t.name, a, rows)
                    weight_map[t.name] = fname
                    done += t.nbytes
                    mx.clear_cache()
            finally:
                writer.close()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": 2, "pad_token_id": 0, "eos_token_id": [1, 106, 50],
                      "suppress_tokens": [258883, 258882], "do_sample": True, "temperature": 1.0,
                      "top_k": 64, "top_p": 0.95}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        write_standin_processor(tmp)
    if progress:
        progress(total, total, "")
    params = sum(math.prod(s) for s in shapes.values())
    return SynthInfo(Path(out), params, total)
