"""Quantization: the one place that says which tensors are quantized and how.

A converted folder's ``config.json`` carries a ``quantization`` block (mlx-lm / mlx-vlm convention):
``{"group_size": 64, "bits": 4, "mode": "affine", "<module path>": {"bits": 8, "group_size": 64}, …}``.
Loading quantizes exactly the modules whose ``.scales`` tensor is in the checkpoint, with the
per-module override when there is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .weights import to_mlx_name


def per_module_overrides(quantization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-module settings of a quantization block, keyed by MLX module path."""
    out = {}
    for key, value in quantization.items():
        if isinstance(value, dict):
            out[to_mlx_name(key) or key] = value
    return out


def quantize_for_loading(model: nn.Module, quantization: dict[str, Any], weight_names: set[str]) -> None:
    """Swap in quantized layers wherever the checkpoint holds quantized weights (in place)."""
    bits = quantization.get("bits")
    group_size = quantization.get("group_size")
    mode = quantization.get("mode", "affine")
    overrides = per_module_overrides(quantization)

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if f"{path}.scales" not in weight_names:
            return False
        if path in overrides:
            o = overrides[path]
            return {
                "bits": o.get("bits", bits),
                "group_size": o.get("group_size", group_size),
                "mode": o.get("mode", mode),
            }
        return True

    nn.quantize(model, group_size=group_size, bits=bits, mode=mode, class_predicate=predicate)


# -- converter-side policy -----------------------------------------------------------------------
#
# What the converter quantizes: every decoder Linear and the tied token embedding (the head
# reads the same quantized table through ``as_linear``). Norms, ``layer_scalar``, the vision LayerNorms
# and position table, and the small vision/audio projections stay float. The same pattern serves the
# MTP drafter, whose tree has no ``language_model.`` prefix (see weights.py).

RECIPES = ("uniform", "mixed")
BITS_CHOICES = (4, 8, 16)  # 16 = no quantization: the float dtype only
GROUP_SIZES = (32, 64, 128)

_QUANTIZED_MODULES = re.compile(
    r"^(language_model\.)?(embed_tokens|layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj))$"
)

# The ``mixed`` recipe: modules promoted one precision step (4 → 8 bits, 8 → float). Chosen by measured
# error, not habit — benchmarks/quant_fidelity.py quantizes one component group at a time and ranks them
# by the KL divergence it causes (table in benchmarks/quant_fidelity.md). The tied embedding/head is the
# clear outlier (it is both the input table and the output projection, so its error reaches every logit
# directly); the next group, the attention value/output path, costs little and is promoted too.
MIXED_PROMOTED = re.compile(r"^(language_model\.)?(embed_tokens|layers\.\d+\.self_attn\.[vo]_proj)$")


@dataclass(frozen=True)
class QuantSpec:
    """How one module is quantized."""

    bits: int
    group_size: int
    mode: str = "affine"

    def as_dict(self) -> dict[str, Any]:
        """The per-module entry of a ``quantization`` block."""
        return {"bits": self.bits, "group_size": self.group_size, "mode": self.mode}


def quantizable(module_path: str) -> bool:
    """Whether the converter's policy quantizes this module at all (before recipe and group-size checks)."""
    return bool(_QUANTIZED_MODULES.match(module_path))


def module_spec(module_path: str, in_dims: int, bits: int, group_size: int, recipe: str) -> QuantSpec | None:
    """Quantization of one module for a conversion, or None to keep it float."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (choose from {', '.join(RECIPES)})")
    if bits >= 16 or not _QUANTIZED_MODULES.match(module_path):
        return None
    if recipe == "mixed" and MIXED_PROMOTED.match(module_path):
        bits = 8 if bits < 8 else 16
        if bits >= 16:
            return None
    if in_dims % group_size:
        return None  # cannot form whole groups: kept float (the report shows it)
    return QuantSpec(bits, group_size)


def quantization_block(bits: int, group_size: int, specs: dict[str, QuantSpec | None]) -> dict[str, Any] | None:
    """The ``config.json`` quantization block: defaults plus one entry per module that differs.

    Modules kept float need no entry: loading quantizes exactly the modules whose ``.scales`` exist.
    """
    if bits >= 16:
        return None
    default = QuantSpec(bits, group_size)
    block: dict[str, Any] = default.as_dict()
    for path, spec in sorted(specs.items()):
        if spec is not None and spec != default:
            block[path] = spec.as_dict()
    return block


def quantize_weight(weight: mx.array, spec: QuantSpec) -> dict[str, mx.array]:
    """``{"weight", "scales", "biases"}`` of an affine-quantized matrix (rows quantized independently)."""
    wq, scales, biases = mx.quantize(weight, group_size=spec.group_size, bits=spec.bits, mode=spec.mode)
    return {"weight": wq, "scales": scales, "biases": biases}


def quantized_shapes(shape: tuple[int, ...], spec: QuantSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of the packed weight, scales and biases for a matrix of ``shape`` (no compute)."""
    *rows, cols = shape
    return {
        "weight": (*rows, cols * spec.bits // 32),
        "scales": (*rows, cols // spec.group_size),
        "biases": (*rows, cols // spec.group_size),
    }
