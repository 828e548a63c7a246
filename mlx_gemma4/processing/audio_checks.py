"""Checks around decoding an audio file: a WAV's declared length, and the MP3 decoder's stderr notes."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import InputError

SNIFF_BYTES = 64  # enough for every container signature below and a RIFF/WAVE header
# Containers libsndfile recognises by their first bytes. A file starting otherwise may be handed to
# mpg123, which prints its resync notes straight to file descriptor 2, below Python's sys.stderr.
_OWN_SIGNATURES = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"caff", b".snd", b"riff")
_UNKNOWN_LENGTHS = (0, 0xFFFFFFFF)  # what streaming writers put in a data chunk of unknown size
_MAX_CHUNKS = 64  # a real WAV has a handful; bounds the walk through a corrupt header
_STDERR_LOCK = threading.Lock()


def may_reach_mpg123(head: bytes) -> bool:
    """Whether libsndfile may try the MPEG decoder on a file starting with ``head``."""
    return not head.startswith(_OWN_SIGNATURES)


@contextlib.contextmanager
def quiet_stderr(enabled: bool) -> Iterator[None]:
    """While enabled, file descriptor 2 goes to /dev/null (the decoder's notes are not the user's error)."""
    if not enabled:
        yield
        return
    with _STDERR_LOCK:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2 in this process: nothing to keep clean
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _amount(n: int, byte_rate: int | None) -> str:
    return f"{n / byte_rate:.2f} s" if byte_rate else f"{n:,} bytes"


def check_wav_length(fp: BinaryIO, head: bytes, file_size: int, name: str) -> None:
    """InputError when a RIFF/WAVE file holds less audio than its data chunk declares.

    libsndfile quietly shortens such a file to what is present, so a cut download would pass as a
    complete, shorter recording.
    """
    if head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return
    order = "<" if head[:4] == b"RIFF" else ">"
    offset, byte_rate = 12, None
    for _ in range(_MAX_CHUNKS):
        fp.seek(offset)
        header = fp.read(8)
        if len(header) < 8:
            return
        chunk, size = header[:4], struct.unpack(order + "I", header[4:])[0]
        if chunk == b"fmt " and size >= 12:
            fmt = fp.read(12)
            byte_rate = struct.unpack(order + "HHII", fmt)[3] if len(fmt) == 12 else None
        elif chunk == b"data":
            present = file_size - offset - 8
            if size not in _UNKNOWN_LENGTHS and present < size:
                raise InputError(
                    f"{name}: truncated WAV: its header declares {_amount(size, byte_rate)} of audio, "
                    f"the file holds {_amount(max(present, 0), byte_rate)}"
                )
            return
        offset += 8 + size + (size & 1)
