"""mlx-gemma4: Google's Gemma 4 12B unified (encoder-free multimodal) model on MLX.

Public names are imported lazily so that ``mlx_gemma4.processing`` (numpy/Pillow only) can be
used without importing mlx.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "mlx_gemma4.loader",
    "Gemma4Error": "mlx_gemma4.errors",
    "InputError": "mlx_gemma4.errors",
    "ModelLoadError": "mlx_gemma4.errors",
    "ConversionError": "mlx_gemma4.errors",
    "GenerationRequest": "mlx_gemma4.generation",
    "stream_generate": "mlx_gemma4.generation",
    "generate": "mlx_gemma4.generation",
    "stream_batch": "mlx_gemma4.generation",
    "batch_generate": "mlx_gemma4.generation",
    "ChatSession": "mlx_gemma4.generation",
    "GenerationChunk": "mlx_gemma4.generation",
    "GenerationResult": "mlx_gemma4.generation",
    "GenerationStats": "mlx_gemma4.generation",
    "load_drafter": "mlx_gemma4.loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlx_gemma4' has no attribute {name!r}")


__all__ = list(_LAZY)
