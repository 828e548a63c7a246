"""How many items to decode together by default: as many as half the free memory holds, 1 to 8.

Per row the cost is its KV cache for the prompt plus the caption (sliding layers capped at their window)
and the prefill activations of its prompt; the model's weights are already loaded, so what is free now
is what the batch can use. Half of it is kept back for the allocator, the preprocessing threads and the
rest of the machine. Above 8 rows decode stops getting cheaper per row on a Mac's memory bandwidth.
"""

from __future__ import annotations

import os

MAX_DEFAULT_BATCH = 8
ACTIVATION_FACTOR = 16  # prefill temporaries per prompt token, in units of hidden_size floats


def free_memory_bytes() -> int | None:
    """Memory the process can still take: Metal's recommended working set minus what MLX holds (macOS), else
    the kernel's MemAvailable (Linux); None when neither is known."""
    import mlx.core as mx

    info = mx.device_info() if hasattr(mx, "device_info") else {}
    limit = info.get("max_recommended_working_set_size")
    if limit:
        return max(0, int(limit) - mx.get_active_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def row_bytes(text_config, prompt_tokens: int, max_tokens: int, dtype_bytes: int = 2) -> int:
    """Memory one batch row needs: its KV cache at full length plus its prompt's prefill activations."""
    tokens = prompt_tokens + max_tokens
    kv = 0
    for kind, head_dim, heads in zip(text_config.layer_types, text_config.layer_head_dims,
                                     text_config.layer_kv_heads, strict=True):
        length = min(tokens, text_config.sliding_window) if kind == "sliding_attention" else tokens
        kv += 2 * heads * head_dim * length * dtype_bytes
    return kv + prompt_tokens * text_config.hidden_size * 4 * ACTIVATION_FACTOR


def default_batch_size(model, opts) -> int:
    """The batch size when none is given: half the free memory over one row's need, clamped to 1..8."""
    from ..processing import DEFAULT_BUDGET

    free = free_memory_bytes()
    if free is None:
        return 1
    prompt = (opts.image_tokens or DEFAULT_BUDGET) + 64  # the image (or ≤ 30 s of audio ≈ 750) + template
    per_row = row_bytes(model.config.text_config, prompt, opts.request.max_tokens)
    return max(1, min(MAX_DEFAULT_BATCH, int(0.5 * free) // max(per_row, 1)))
