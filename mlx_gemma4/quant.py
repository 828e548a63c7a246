"""Quantization: the one place that says which tensors are quantized and how.

A converted folder's ``config.json`` carries a ``quantization`` block (mlx-lm / mlx-vlm convention):
``{"group_size": 64, "bits": 4, "mode": "affine", "<module path>": {"bits": 8, "group_size": 64}, …}``.
Loading quantizes exactly the modules whose ``.scales`` tensor is in the checkpoint, with the
per-module override when there is one.
"""

from __future__ import annotations

from typing import Any

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
