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


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists the packages by hand: a new subpackage missing there works in an editable install
    and is absent from the wheel."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {name: root / path for name, path in config["package-dir"].items()}
    folders["mlx_gemma4"] = root / "mlx_gemma4"
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join([name, *rel]))
    assert found == listed
