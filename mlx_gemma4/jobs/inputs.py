"""The files of a batch job: INPUTS (files, folders, globs, ``@list.txt``) → a sorted, de-duplicated item list.

No mlx here: the walk runs before the model loads, so bad arguments fail fast (``InputError`` → exit 2).
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from PIL import Image

from ..errors import InputError

# Containers PyAV opens for video (the frames are sampled by processing once video support is there).
VIDEO_EXTS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".3gp"})
_GLOB_CHARS = set("*?[")
# Registered by Pillow but not pictures a folder walk should pick up: stub plugins that need extra
# handlers (HDF5, GRIB, BUFR), PostScript (needs Ghostscript), Windows metafiles, MPEG (a video).
_NOT_IMAGES = frozenset({".h5", ".hdf", ".grib", ".bufr", ".eps", ".ps", ".wmf", ".emf", ".mpg", ".mpeg"})


@functools.cache
def image_extensions() -> frozenset[str]:
    """Every extension Pillow can open (not the save-only ones)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN) - _NOT_IMAGES


@functools.cache
def audio_extensions() -> frozenset[str]:
    """Every container libsndfile reads, as extensions (plus the common aliases of Ogg and AIFF)."""
    exts = {"." + f.lower() for f in sf.available_formats()}
    # Headerless RAW needs its layout spelled out, so it is not read.
    return frozenset((exts | {".oga", ".opus", ".aif", ".aiff", ".mp3"}) - {".raw"})


@dataclass(frozen=True)
class Item:
    """One file to process: its absolute path, its name in the output (relative to the root) and its kind."""

    path: Path
    file_name: str  # posix path relative to the input root: the Hugging Face imagefolder ``file_name``
    kind: str  # "image" | "audio" | "video"


def kind_of(path: Path, kinds: Iterable[str] = ("image", "audio", "video")) -> str | None:
    """The modality a file is read as, from its extension; None when no reader takes it."""
    ext = path.suffix.lower()
    table = {"image": image_extensions(), "audio": audio_extensions(), "video": VIDEO_EXTS}
    for kind in kinds:
        if ext in table[kind]:
            return kind
    return None


def _read_list(spec: str) -> list[str]:
    """``@list.txt``: one path per line (blank lines and ``#`` comments ignored), relative to the list."""
    path = Path(spec[1:])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{spec}: cannot read the list file ({e.__class__.__name__}: {e})") from e
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if os.path.isabs(line) else str(path.parent / line))
    return out


def _walk(folder: Path, recursive: bool, kinds: Sequence[str]) -> list[Path]:
    """The readable media files of a folder (its sub-folders too when ``recursive``); hidden files skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".") and kind_of(Path(f), kinds)]
    return found


def _expand(spec: str, recursive: bool, kinds: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """One INPUT → (files, roots): a folder's root is itself, a file's or glob match's its parent."""
    if spec.startswith("@"):
        files, roots = [], []
        for entry in _read_list(spec):
            f, r = _expand(entry, recursive, kinds)
            files += f
            roots += r
        return files, roots
    path = Path(spec).expanduser()
    if path.is_dir():
        return _walk(path, recursive, kinds), [path]
    if path.is_file():
        return [path], [path.parent]
    if _GLOB_CHARS & set(spec):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
        files = [m for m in matches if m.is_file() and kind_of(m, kinds)]
        for m in matches:
            if m.is_dir():
                files += _walk(m, recursive, kinds)
        if not files:
            raise InputError(f"{spec}: the pattern matches no readable media file")
        return files, [f.parent for f in files]
    raise InputError(f"{spec}: no such file or folder")


def collect_items(inputs: Sequence[str], *, recursive: bool = False,
                  kinds: Sequence[str] = ("image", "audio", "video")) -> tuple[list[Item], Path]:
    """Expand INPUTS into items sorted by their output name (deterministic on every machine) and the root
    that names are relative to. InputError on a missing input or when nothing is found."""
    if not inputs:
        raise InputError("no INPUTS given: name files, folders, globs or @list.txt")
    files: list[Path] = []
    roots: list[Path] = []
    for spec in inputs:
        f, r = _expand(spec, recursive, kinds)
        files += f
        roots += r
    if not files:
        hint = "" if recursive else " (add --recursive to look into sub-folders)"
        raise InputError(f"{', '.join(inputs)}: no image/audio/video files found{hint}")
    # The same file reached twice (two INPUTS, a symlink) is one item; names keep the path as given.
    unique = {os.path.realpath(f): os.path.abspath(f) for f in files}
    root = Path(os.path.commonpath([os.path.abspath(r) for r in roots]))
    items = []
    for given in unique.values():
        kind = kind_of(Path(given), kinds) or "image"  # a file named explicitly is tried as an image
        items.append(Item(Path(given), Path(os.path.relpath(given, root)).as_posix(), kind))
    items.sort(key=lambda it: it.file_name)
    return items, root
