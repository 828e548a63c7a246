"""Every JSON file the project reads goes through here: one clear error naming the file, whatever is wrong.

Pure ``json`` / ``pathlib`` (``processing/`` imports it and must never import mlx). The caller picks the
error class (``ModelLoadError`` when loading, ``ConversionInputError`` when converting).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
          float: "a number", type(None): "null"}


def read_json(path: str | Path, error_cls: type[Exception]) -> Any:
    """The parsed content of a JSON file, or ``error_cls`` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise error_cls(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise error_cls(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error_cls(f"{path}: not UTF-8 text (byte {e.start}), so not a JSON file") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error_cls(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except RecursionError as e:
        raise error_cls(f"{path}: JSON nested too deeply") from e


def read_json_object(path: str | Path, error_cls: type[Exception]) -> dict[str, Any]:
    """A JSON file that must hold an object (``{...}``), as a dict; anything else is ``error_cls``."""
    data = read_json(path, error_cls)
    if not isinstance(data, dict):
        raise error_cls(f"{path}: expected a JSON object {{...}}, found {kind_of(data)}")
    return data


def kind_of(value: Any) -> str:
    """'a list', 'a string'… for messages about a JSON value of the wrong type."""
    return _KINDS.get(type(value), type(value).__name__)
