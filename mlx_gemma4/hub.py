"""From a ``--model`` argument to a folder the loader can read.

- A local folder is used as it is (an original Hugging Face checkpoint or one converted by us).
- A hub id is downloaded once with huggingface-hub (its own progress bars; ``HF_HUB_OFFLINE=1`` is
  respected). An original bfloat16 checkpoint (no ``quantization`` block in its config) is then
  converted once, with the streaming converter, into a local cache at the requested bits and reused
  from there on — so the second run needs neither the network nor the 24 GB original.
- Offline with nothing cached, the error says what to run.

The cache lives in ``$MLX_GEMMA4_CACHE`` (default ``~/.cache/mlx-gemma4``), one folder per
repository and bit width: ``converted/<org>--<name>-<bits>bit``. Delete it to re-convert.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import InputError, ModelLoadError

DEFAULT_MODEL = "google/gemma-4-12B-it"
DEFAULT_DRAFTER = "google/gemma-4-12B-it-assistant"
BITS_CHOICES = (4, 8, 16)

# What a runtime needs from a hub repository (no optimizer states, no original Orbax files).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]

Progress = Callable[[int, int, str], None]  # the converter's (bytes done, bytes total, tensor name)


def cache_root() -> Path:
    """Where converted hub checkpoints are kept."""
    return Path(os.environ.get("MLX_GEMMA4_CACHE", "~/.cache/mlx-gemma4")).expanduser()


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` that is not a path on this machine."""
    return not text.startswith((".", "/", "~")) and text.count("/") == 1 and not Path(text).expanduser().exists()


def folder_or_hub_id(spec: str | Path, error: type[Exception]) -> Path | str:
    """``spec`` as a checkpoint folder (a Path) or a hub id (a str); ``error`` for a file or a name that is
    neither."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{path} is a file, not a checkpoint folder")
    text = str(spec)
    if not looks_like_hub_id(text):
        raise error(f"{text}: no such checkpoint folder (and not a hub id of the form org/name)")
    return text


def converted_folder(repo_id: str, bits: int) -> Path:
    """The cache folder of ``repo_id`` converted at ``bits``."""
    return cache_root() / "converted" / f"{repo_id.replace('/', '--')}-{bits}bit"


def is_quantized(folder: Path) -> bool:
    """Whether a checkpoint folder already holds quantized (MLX) weights."""
    from .loader import read_config

    return bool(read_config(folder).get("quantization"))


def download(repo_id: str) -> Path:
    """The local snapshot of a hub repository (downloaded on first use)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except LocalEntryNotFoundError as e:
        raise ModelLoadError(
            f"{repo_id} is not in the local hub cache and the hub cannot be reached (HF_HUB_OFFLINE=1 or no network): "
            f"run the same command once online, or `gemma4 convert {repo_id} OUT` and pass --model OUT"
        ) from e
    except (RepositoryNotFoundError, HFValidationError) as e:
        raise ModelLoadError(f"{repo_id}: no such hub repository ({type(e).__name__})") from e


def resolve_model(spec: str | Path, bits: int = 4, progress: Progress | None = None) -> Path:
    """A loadable folder for ``spec`` (folder or hub id), converting a hub original once at ``bits``."""
    if bits not in BITS_CHOICES:
        raise InputError(f"--bits must be one of {BITS_CHOICES}, not {bits}")
    found = folder_or_hub_id(spec, InputError)
    if isinstance(found, Path):
        return found
    text = found
    cached = converted_folder(text, bits)
    if (cached / "config.json").is_file():
        return cached
    snapshot = download(text)
    if bits == 16 or is_quantized(snapshot):
        return snapshot
    return convert_once(snapshot, cached, bits, progress)


def convert_once(snapshot: Path, out: Path, bits: int, progress: Progress | None = None) -> Path:
    """Convert an original checkpoint into the cache (atomically: an interrupted run leaves nothing)."""
    from .convert.convert import ConvertOptions, convert

    out.parent.mkdir(parents=True, exist_ok=True)
    convert(snapshot, out, ConvertOptions(bits=bits), progress)
    return out
