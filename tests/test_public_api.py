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


def test_every_third_party_import_is_declared():
    """Each package the library, CLI or converter imports by name is a dependency (or an extra's) in pyproject,
    not something that only arrives through typer; transformers alone comes through mlx-lm (DESIGN.md)."""
    import ast
    import re
    import sys
    from importlib.metadata import packages_distributions, requires
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime = [*project["dependencies"], *project["optional-dependencies"]["cpu"],
               *project["optional-dependencies"]["serve"]]
    def name(spec: str) -> str:
        return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")

    declared = {name(spec) for spec in runtime}
    # transformers (AutoTokenizer) arrives with mlx-lm, whose tokenizer wrapper the design builds on; listing
    # it ourselves would put the test reference's package among the runtime dependencies.
    declared |= {"transformers"} & {name(spec) for spec in requires("mlx-lm") or ()}
    imported: dict[str, str] = {}
    for folder in ("mlx_gemma4", "cli", "convert"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "mlx_gemma4":
                        imported.setdefault(top, str(path.relative_to(root)))
    dists = packages_distributions()
    missing = {}
    for top, where in imported.items():
        names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
        if not names & declared:
            missing[top] = where
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
