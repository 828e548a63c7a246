"""What the image, audio and video decoders share about a source: the one check of a file path before any
byte of it is decoded, its short name in error messages, and the key that says two sources hold the same
content (so a caller may reuse what one of them decoded to)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ..errors import InputError

# Schemes a user may paste instead of a local path; nothing here downloads files.
_URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "data:")


def check_path(source: str | os.PathLike, name: str) -> Path:
    """The local regular file ``source`` names, or InputError (URL, missing, folder, not a file, empty)."""
    text = os.fsdecode(source)
    if text.lower().startswith(_URL_PREFIXES):
        raise InputError(f"{name}: URLs are not fetched (no network access here); download the file first")
    path = Path(text)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{name}: no such file") from None
    except OSError as e:
        raise InputError(f"{name}: cannot access file ({e.strerror or e})") from e
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block or stream forever; only regular files are read.
        raise InputError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    return path


def open_binary(path: Path, name: str):
    """``path`` opened for reading bytes, or InputError naming it (permissions, I/O errors)."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it with ``with``
    except OSError as e:
        raise InputError(f"{name}: cannot read file ({e.strerror or e})") from e



def describe_source(source: object, what: str, name_object=None) -> str:
    """A short name for a source in error messages: the path, ``<N bytes of WHAT>``, or for an in-memory object
    what ``name_object(source)`` says (None: its type name)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of {what}>"
    named = name_object(source) if name_object is not None else None
    return f"<{named or type(source).__name__}>"


def content_key(source) -> tuple | None:
    """What identifies a source's content: a file's (path, size, mtime), or the digest of bytes; None for
    in-memory objects (a PIL image or an array may change without a sign) and for paths that do not stat."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ("bytes", hashlib.blake2b(source, digest_size=16).hexdigest())
    if isinstance(source, (str, os.PathLike)):
        try:
            path = Path(os.fsdecode(source)).resolve()
            info = path.stat()
        except (OSError, ValueError):
            return None
        return ("file", str(path), info.st_size, info.st_mtime_ns)
    return None
