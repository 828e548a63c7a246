"""Generation hygiene as mlx-lm does it: a dedicated stream, and wired memory while generating.

On Apple silicon the model's weights are wired (kept resident) for the duration of a generation, so
a 12B model on a 16 GB Mac is not paged out between tokens; elsewhere (CPU, Linux, a backend without
wired memory) both helpers are no-ops. Nothing here assumes a platform.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlx.core as mx
from mlx.utils import tree_reduce

_streams: dict = {}


def generation_stream():
    """The stream generation runs on (one per device, thread-local like mlx-lm's)."""
    device = mx.default_device()
    key = str(device)
    if key not in _streams:
        make = getattr(mx, "new_thread_local_stream", mx.new_stream)
        _streams[key] = make(device)
    return _streams[key]


def _wired_memory_available() -> bool:
    metal = getattr(mx, "metal", None)
    return bool(metal is not None and metal.is_available() and hasattr(mx, "set_wired_limit"))


def model_nbytes(model) -> int:
    """Bytes of the model's arrays."""
    return tree_reduce(lambda acc, x: acc + x.nbytes if isinstance(x, mx.array) else acc, model, 0)


@contextlib.contextmanager
def wired_limit(model) -> Iterator[None]:
    """While the block runs, wire the model's bytes plus a quarter for the KV cache and activations,
    capped at the machine's recommended working set."""
    if not _wired_memory_available():
        yield
        return
    recommended = int(mx.device_info()["max_recommended_working_set_size"])
    old = mx.set_wired_limit(min(recommended, int(model_nbytes(model) * 1.25)))
    try:
        yield
    finally:
        mx.synchronize()  # never change the limit under an async evaluation
        mx.set_wired_limit(old)
