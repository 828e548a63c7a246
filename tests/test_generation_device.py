"""Generation hygiene: a dedicated stream, and a wired-memory limit only where the backend has one."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_gemma4.generation import device


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = mx.zeros((256, 256))  # 256 KiB of float32


def test_generation_stream_is_one_stream_per_device():
    assert device.generation_stream() is device.generation_stream()
    with mx.stream(device.generation_stream()):
        assert (mx.ones(3) * 2).tolist() == [2, 2, 2]


def test_wired_limit_is_a_no_op_without_wired_memory(monkeypatch):
    monkeypatch.setattr(device, "_wired_memory_available", lambda: False)
    calls = []
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: calls.append(n) or 0, raising=False)
    with device.wired_limit(_Tiny()):
        pass
    assert calls == []


def test_wired_limit_is_sized_to_the_model_and_restored(monkeypatch):
    calls = []
    monkeypatch.setattr(device, "_wired_memory_available", lambda: True)
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 10**9}, raising=False)
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: calls.append(n) or 123, raising=False)
    model = _Tiny()
    with device.wired_limit(model):
        assert calls == [int(device.model_nbytes(model) * 1.25)]
    assert calls[-1] == 123  # the previous limit is put back
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 1000}, raising=False)
    with device.wired_limit(model):
        pass
    assert calls[-2] == 1000  # never more than the machine recommends
