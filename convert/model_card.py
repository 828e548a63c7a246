"""The short README model card written into every converted folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import ConversionResult, ConvertOptions
    from .source import Source


def model_card(source: Source, result: ConversionResult, opts: ConvertOptions) -> str:
    """Markdown describing what was converted, how, and how to load it."""
    kind = "MTP drafter (assistant)" if source.is_assistant else "model"
    precision = (
        f"{opts.dtype} (not quantized)"
        if opts.bits >= 16
        else f"{opts.bits}-bit affine, group size {opts.group_size}, recipe `{opts.recipe}`"
    )
    rows = "\n".join(
        f"| {name} | {c.params:,} | {', '.join(sorted(c.precisions))} | {c.bits_per_weight:.2f} |"
        for name, c in sorted(result.components.items())
    )
    return f"""---
library_name: mlx
tags: [mlx, gemma4, gemma4_unified]
---

# {source.folder.name} — MLX {kind}

Converted with `gemma4 convert` (mlx-gemma4) from `{source.folder}`.

* Weights: {precision}; float parts in {opts.dtype}.
* Size: {result.total_bytes / 1e9:.2f} GB, {result.bits_per_weight:.2f} bits per weight (scales and biases included).

| component | parameters | precision | bits / weight |
| --- | ---: | --- | ---: |
{rows}

```python
from mlx_gemma4 import load
model, processor = load("path/to/this/folder")
```

License and intended use: those of the original checkpoint.
"""
