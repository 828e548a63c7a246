"""Streaming safetensors I/O: read a tensor a few rows at a time, write shards whose layout is planned first.

Why not only the ``safetensors`` package: its reader memory-maps whole files (every page touched
stays in the process's resident set, so reading a 24 GB checkpoint shows as 24 GB of RSS) and its
writer needs every tensor of a shard in memory at once. The format itself is tiny — 8 bytes of
header length, a JSON header with dtypes, shapes and byte offsets, then raw little-endian data — so
here the headers are read and written directly, and the data moves with ordinary seek/read/write
calls in bounded chunks. Files written here are read back with ``safetensors.safe_open`` and
``mx.load`` in the tests.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_gemma4.errors import ConversionError, ConversionInputError

# safetensors dtype name → (numpy storage dtype, mlx dtype). bf16 travels as uint16 bits through numpy.
DTYPES: dict[str, tuple[np.dtype, mx.Dtype]] = {
    "F32": (np.dtype("<f4"), mx.float32),
    "F16": (np.dtype("<f2"), mx.float16),
    "BF16": (np.dtype("<u2"), mx.bfloat16),
    "U32": (np.dtype("<u4"), mx.uint32),
    "I32": (np.dtype("<i4"), mx.int32),
    "I64": (np.dtype("<i8"), mx.int64),
    "U8": (np.dtype("u1"), mx.uint8),
    "BOOL": (np.dtype("?"), mx.bool_),
}
MLX_TO_ST = {mx_dtype: name for name, (_, mx_dtype) in DTYPES.items()}
CHUNK_BYTES = 64 << 20  # bytes of source data per read; bounds the converter's working set


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a safetensors file."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor locations of one safetensors file (no data is read)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        size = path.stat().st_size
    except (OSError, ValueError, struct.error, RecursionError) as e:
        raise ConversionInputError(f"{path}: not a readable safetensors file ({e})") from e
    base = 8 + length
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = meta["dtype"], tuple(int(n) for n in meta["shape"]), meta["data_offsets"]
            if dtype not in DTYPES:
                raise ConversionInputError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b) or base + b > size:
                raise ValueError(f"data_offsets {meta['data_offsets']} outside the file")
            if b - a != math.prod(shape) * DTYPES[dtype][0].itemsize:
                raise ValueError(f"{b - a} bytes for shape {list(shape)} {dtype}")
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionInputError(f"{path}: tensor '{name}' has a broken header entry ({e})") from e
        out[name] = TensorInfo(name, path, dtype, shape, base + a, b - a)
    return out


def read_rows(info: TensorInfo, row_start: int, row_stop: int) -> mx.array:
    """Rows ``[row_start, row_stop)`` (first axis) of a tensor as an mlx array in its stored dtype."""
    np_dtype, mx_dtype = DTYPES[info.dtype]
    shape = info.shape or (1,)
    row_bytes = info.nbytes // shape[0] if shape[0] else 0
    count = (row_stop - row_start) * row_bytes
    with open(info.path, "rb") as f:
        f.seek(info.start + row_start * row_bytes)
        data = f.read(count)
    if len(data) != count:
        raise ConversionInputError(f"{info.path}: truncated data for tensor '{info.name}'")
    arr = np.frombuffer(data, dtype=np_dtype).reshape((row_stop - row_start, *shape[1:]))
    out = mx.array(arr)
    if mx_dtype == mx.bfloat16:
        out = out.view(mx.bfloat16)
    return out if info.shape else out.reshape(())


def row_chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    """Row ranges covering the first axis, each at most ``chunk_bytes`` of data (at least one row)."""
    rows = shape[0] if shape else 1
    per_row = max(1, math.prod(shape[1:]) * itemsize) if shape else itemsize
    step = max(1, chunk_bytes // per_row)
    for a in range(0, rows, step):
        yield a, min(rows, a + step)


def to_bytes(x: mx.array) -> memoryview:
    """Raw little-endian bytes of an mlx array (bf16 via its uint16 bits)."""
    if x.dtype == mx.bfloat16:
        x = x.view(mx.uint16)
    return memoryview(np.ascontiguousarray(np.array(x, copy=False))).cast("B")


@dataclass
class PlannedTensor:
    """One tensor of an output shard: name, dtype, shape, and its byte range (set by ``ShardLayout``)."""

    name: str
    dtype: mx.Dtype
    shape: tuple[int, ...]
    offset: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes of data."""
        return math.prod(self.shape) * self.dtype.size


class ShardLayout:
    """The header of one output shard, fixed before any data is written, so data can stream in."""

    def __init__(self, tensors: list[PlannedTensor]):
        self.tensors = {t.name: t for t in tensors}
        offset = 0
        header: dict = {"__metadata__": {"format": "mlx"}}
        for t in tensors:
            t.offset = offset
            span = [offset, offset + t.nbytes]
            header[t.name] = {"dtype": MLX_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": span}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
        self.header = struct.pack("<Q", len(raw)) + raw
        self.data_bytes = offset

    @property
    def total_bytes(self) -> int:
        """Size of the finished file."""
        return len(self.header) + self.data_bytes


class ShardWriter:
    """Writes one shard: header first, then each tensor's rows at their planned place."""

    def __init__(self, path: Path, layout: ShardLayout):
        self.layout = layout
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close(); the writer spans many calls
        self.file.write(layout.header)
        self.file.truncate(layout.total_bytes)
        self.base = len(layout.header)

    def write_rows(self, name: str, row_start: int, rows: mx.array) -> None:
        """Write ``rows`` as rows ``row_start…`` of tensor ``name``."""
        t = self.layout.tensors[name]
        if rows.dtype != t.dtype or tuple(rows.shape[1:]) != tuple(t.shape[1:]):
            raise ConversionError(f"internal: tensor '{name}' chunk {rows.dtype}{rows.shape} does not fit its plan")
        row_bytes = t.nbytes // t.shape[0] if t.shape else t.nbytes
        self.file.seek(self.base + t.offset + row_start * row_bytes)
        self.file.write(to_bytes(rows))

    def close(self) -> None:
        """Flush and close the file."""
        self.file.close()
