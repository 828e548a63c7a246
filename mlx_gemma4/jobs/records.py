"""Result rows on disk: append-only JSONL / CSV files and per-item ``.txt`` files, crash-safe and resumable.

Every row is written with one ``write`` call as soon as its item is done, so a SIGKILL loses at most the
row being written; that torn tail (bytes after the last complete row) is cut off when the file is opened
again, and is never read as a row. Rows reach the disk (``fsync``) at least every ``FSYNC_EVERY_S``
seconds and when the sink closes. An existing output is only ever appended to.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError

COLUMNS = ("file_name", "caption", "prompt_tokens", "generation_tokens", "seconds", "finish_reason", "error")
FORMATS = ("jsonl", "csv", "txt")
FSYNC_EVERY_S = 2.0


def format_for(out: Path, fmt: str | None) -> str:
    """The output format: the one asked for, else from the output's extension (``.csv``, ``.jsonl``/``.json``;
    an existing folder or no extension means ``txt``)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r}: unknown format (choose {', '.join(FORMATS)})")
        return fmt
    ext = out.suffix.lower()
    if ext == ".csv":
        return "csv"
    if out.is_dir() or (not ext and not out.exists()):
        return "txt"
    return "jsonl"


def complete_length(data: bytes, fmt: str) -> int:
    """Length of the longest prefix of ``data`` that holds only complete rows.

    A row ends with a newline; in CSV a newline inside a quoted caption does not end a row (the quote
    count up to a row end is even, since quotes inside fields are doubled).
    """
    if fmt != "csv":
        return data.rfind(b"\n") + 1
    best = pos = quotes = 0
    for line in data.split(b"\n")[:-1]:  # split on LF only: a caption may hold a CR
        pos += len(line) + 1
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            best = pos
    return best


def repair_tail(path: Path, fmt: str) -> int:
    """Cut a torn last row (a process killed mid-write) off ``path``; returns the number of bytes removed."""
    data = path.read_bytes()
    keep = complete_length(data, fmt)
    if keep == len(data):
        return 0
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def _row_from_csv(rec: dict[str, str]) -> dict[str, Any]:
    """A CSV record with its numbers and empty error read back as JSON values."""
    row: dict[str, Any] = dict(rec)
    for key, cast in (("prompt_tokens", int), ("generation_tokens", int), ("seconds", float)):
        row[key] = cast(rec[key]) if rec.get(key) not in (None, "") else None
    row["error"] = rec.get("error") or None
    return row


def read_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The complete rows of an output file (a torn tail is ignored here; ``repair_tail`` removes it)."""
    data = path.read_bytes()
    yield from _parse_rows(path, data[: complete_length(data, fmt)], fmt)


def _not_ours(path: Path, why: str) -> InputError:
    return InputError(f"{path}: {why}, so it is not an output of gemma4 caption/transcribe; it was left untouched: "
                      "move it aside or choose another --out")


def _parse_rows(path: Path, data: bytes, fmt: str) -> Iterator[dict[str, Any]]:
    """The rows in ``data`` (complete rows only); InputError naming ``path`` when they are not rows of ours."""
    try:
        text = data.decode("utf-8", "surrogateescape" if fmt == "csv" else "strict")
    except UnicodeDecodeError as e:
        raise _not_ours(path, f"byte {e.start} is not UTF-8 text") from None
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if text and "file_name" not in (reader.fieldnames or ()):
            raise _not_ours(path, "its first line is not a header with a file_name column")
        yield from (_row_from_csv(r) for r in reader)
        return
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may be in a caption
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {n} is not a JSON row ({e.msg}); move the file aside") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise InputError(f"{path}: line {n} has no file_name; this is not a caption file")
        yield row


def _whole_row(tail: bytes) -> bool:
    """Whether ``tail`` is a complete JSON row that only lacks its newline (a hand-edited file)."""
    try:
        row = json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(row, dict) and isinstance(row.get("file_name"), str)


def prepare_existing(path: Path, fmt: str, columns: tuple[str, ...] = COLUMNS) -> list[dict[str, Any]]:
    """The rows of an existing output, once it is checked to be ours and a torn last row is cut off.

    Nothing is cut from a file that is not ours (binary data, other text, a CSV with other columns):
    its complete rows are checked first, and the bytes after them must be the start of a row as this
    module writes it (``{"file_name": …`` in JSONL; in CSV the header when no line is complete yet).
    """
    data = path.read_bytes()
    keep = complete_length(data, fmt)
    rows = list(_parse_rows(path, data[:keep], fmt))
    tail = data[keep:]
    if not tail:
        return rows
    if fmt == "jsonl" and _whole_row(tail):
        with open(path, "ab") as f:  # keep the row: give it its newline
            f.write(b"\n")
        return [*rows, json.loads(tail.decode("utf-8"))]
    if fmt == "jsonl":
        start = ("{" + json.dumps(columns[0]) + ": ").encode()
    else:
        start = ",".join(columns).encode() if keep == 0 else b""
    if not (tail.startswith(start) or start.startswith(tail)):
        raise _not_ours(path, f"its last {len(tail)} bytes are not a row cut short")
    repair_tail(path, fmt)
    return rows


def encode_row(row: dict[str, Any], fmt: str, columns: tuple[str, ...] = COLUMNS) -> bytes:
    """One row as the bytes appended to the file (always ending with a newline)."""
    # A file name that is not UTF-8 (Linux hands its bytes over as lone surrogates) must survive the
    # round trip, or resuming would never find its row: JSONL writes it as a \udcXX escape (still
    # UTF-8, read back as the same string), CSV (no escapes) as its original bytes.
    if fmt == "jsonl":
        text = json.dumps({k: row.get(k) for k in columns}, ensure_ascii=False) + "\n"
        return text.encode("utf-8", "backslashreplace")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if row.get(k) is None else row.get(k) for k in columns])
    return buf.getvalue().encode("utf-8", "surrogateescape")


class FileSink:
    """An append-only JSONL/CSV output: repairs a torn tail, knows which items are in it, appends rows."""

    def __init__(self, path: Path, fmt: str, columns: tuple[str, ...] = COLUMNS,
                 key: Callable[[dict[str, Any]], str] = lambda row: row["file_name"]):
        self.path, self.fmt, self.columns, self.key = Path(path), fmt, columns, key
        self.done: set[str] = set()
        _check_writable(self.path)
        if self.path.exists() and self.path.stat().st_size:
            self.done = {key(r) for r in prepare_existing(self.path, fmt, columns)}
        # O_APPEND: every write lands at the end, never over earlier rows.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fmt == "csv" and os.fstat(self._fd).st_size == 0:
            self._write(",".join(columns).encode() + b"\n")
        self._synced_at = time.monotonic()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def write(self, row: dict[str, Any]) -> None:
        """Append one row now (visible to a reader at once); fsync if the last one is a while ago."""
        self._write(encode_row(row, self.fmt, self.columns))
        self.done.add(self.key(row))
        if time.monotonic() - self._synced_at >= FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        """Force the rows written so far onto the disk."""
        os.fsync(self._fd)
        self._synced_at = time.monotonic()

    def close(self) -> None:
        """Sync and close (idempotent)."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


class TxtSink:
    """``NAME.txt`` per item, beside the file or mirrored under a folder; written atomically (temp + rename),
    so a file is either whole or absent. Failed items get no file (they are retried by the next run)."""

    fmt = "txt"

    def __init__(self, folder: Path | None, root: Path, items):
        self.folder, self.root = (Path(folder) if folder is not None else None), root
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise InputError(f"{self.folder}: --format txt writes one file per item; --out must be a folder")
            if not self.folder.exists() and self.folder.parent.is_dir():
                self.folder.mkdir()
            _check_writable(self.folder / "probe")
        self.done = {it.file_name for it in items if self.target(it.file_name).exists()}

    def target(self, file_name: str) -> Path:
        """Where the caption of ``file_name`` goes."""
        base = self.folder if self.folder is not None else self.root
        return (base / file_name).with_suffix(".txt")

    def write(self, row: dict[str, Any]) -> None:
        """Write the caption file of a successful row (an error row writes nothing)."""
        if row.get("error") is not None:
            return
        path = self.target(row["file_name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(row["caption"])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.done.add(row["file_name"])

    def close(self) -> None:
        """Nothing is held open."""


def _check_writable(path: Path) -> None:
    """InputError (exit 2) naming the output when its folder is missing or not writable."""
    parent = path.parent if not path.is_dir() else path
    if not parent.is_dir():
        raise InputError(f"{path}: the output folder {parent} does not exist")
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: output file is not writable")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write in {parent} (permission denied)")


def open_sink(out: Path, fmt: str, root: Path, items):
    """The sink of a job: a JSONL/CSV file, or txt files (into ``out`` when it is a folder, else beside)."""
    if fmt == "txt":
        return TxtSink(out, root, items)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --format {fmt} writes one file (name a file, or use --format txt)")
    return FileSink(out, fmt)
