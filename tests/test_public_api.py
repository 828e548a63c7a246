"""The names exported from ``mlx_gemma4`` stay functions/classes even after every submodule is imported
(a submodule named like an export would shadow it)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import mlx_gemma4


def test_exports_are_not_shadowed_by_submodules():
    for info in pkgutil.walk_packages(mlx_gemma4.__path__, "mlx_gemma4."):
        importlib.import_module(info.name)
    for name in mlx_gemma4.__all__:
        obj = getattr(mlx_gemma4, name)
        assert not inspect.ismodule(obj), name
        assert callable(obj), name
