"""What a conversion is asked to produce and what it produced: plain data, shared by the converter and
the model card (kept apart from ``convert.py`` so the two do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_gemma4.errors import ConversionInputError
from mlx_gemma4.quant import BITS_CHOICES, GROUP_SIZES, RECIPES

FLOAT_DTYPE_NAMES = ("bfloat16", "float16", "float32")
DEFAULT_SHARD_BYTES = 4 << 30


@dataclass(frozen=True)
class ConvertOptions:
    """What to produce."""

    bits: int = 4
    group_size: int = 64
    recipe: str = "uniform"
    dtype: str = "bfloat16"
    max_shard_bytes: int = DEFAULT_SHARD_BYTES
    force: bool = False
    no_tokenizer: bool = False  # convert a source without tokenizer files (the output then has none)

    def check(self) -> None:
        """Raise ConversionInputError for an impossible combination."""
        if self.bits not in BITS_CHOICES:
            raise ConversionInputError(f"--bits must be one of {BITS_CHOICES}, not {self.bits}")
        if self.group_size not in GROUP_SIZES:
            raise ConversionInputError(f"--group-size must be one of {GROUP_SIZES}, not {self.group_size}")
        if self.recipe not in RECIPES:
            raise ConversionInputError(f"--recipe must be one of {RECIPES}, not {self.recipe!r}")
        if self.dtype not in FLOAT_DTYPE_NAMES:
            raise ConversionInputError(f"--dtype must be one of {FLOAT_DTYPE_NAMES}, not {self.dtype!r}")
        if self.max_shard_bytes < 1:
            raise ConversionInputError("the shard size limit must be positive")


@dataclass
class ComponentStats:
    """Size of one component of the converted model."""

    params: int = 0
    nbytes: int = 0
    precisions: set[str] = field(default_factory=set)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per original parameter (scales and biases included)."""
        return 8 * self.nbytes / max(self.params, 1)


@dataclass
class ConversionResult:
    """What a conversion produced, for the report."""

    out: Path
    source_bytes: int
    total_bytes: int
    params: int
    shards: int
    components: dict[str, ComponentStats]
    quantization: dict[str, Any] | None
    warnings: list[str]
    notes: list[str] = field(default_factory=list)  # housekeeping (stale staging folders removed…)
    missing_side_files: list[str] = field(default_factory=list)  # expected beside the weights, absent in SRC

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per parameter over the whole model."""
        return 8 * self.total_bytes / max(self.params, 1)
