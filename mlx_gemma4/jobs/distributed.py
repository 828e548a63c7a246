"""Splitting a job across processes started by ``mlx.launch`` (one per Mac, or several on one machine).

Only a process started by ``mlx.launch`` (or mpirun) joins a group, so a plain run never needs a
distributed backend. Rank r takes items r, r + n, r + 2n, … of the sorted list (deterministic on every
machine, and long runs of similar files are spread over the ranks), writes its rows to its own part file
next to the output and resumes from it. When every rank is done, the parts travel to rank 0 through
``mx.distributed`` (no shared disk needed), rank 0 appends them to the output in item order, and after a
second collective every rank removes its part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Gemma4Error
from .records import FileSink, read_rows

# Set by mlx.launch (ring / JACCL backends) or by MPI launchers for each process they start.
_LAUNCH_ENV = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job: rank, number of ranks, and the MLX group (None when alone)."""

    rank: int = 0
    size: int = 1
    group: Any = None


def launched() -> bool:
    """Whether a distributed launcher started this process."""
    return any(k in os.environ for k in _LAUNCH_ENV)


def join() -> Cluster:
    """The group this process belongs to: a real one under mlx.launch, else rank 0 of 1 (no backend used)."""
    if not launched():
        return Cluster()
    import mlx.core as mx

    try:
        group = mx.distributed.init(strict=True)
    except (RuntimeError, ValueError) as e:
        raise Gemma4Error(f"started by a distributed launcher but no MLX backend could start ({e})") from e
    return Cluster(group.rank(), group.size(), group)


def shard(items: list, cluster: Cluster) -> list:
    """The items of this rank: every size-th one, starting at its rank."""
    return items[cluster.rank :: cluster.size]


def part_path(out: Path, cluster: Cluster) -> Path:
    """The part file of this rank, next to the output: ``captions.part1of2.jsonl``."""
    return out.with_name(f"{out.stem}.part{cluster.rank}of{cluster.size}{out.suffix}")


def all_sum(cluster: Cluster, values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (also a barrier: it returns once every rank has called it)."""
    if cluster.group is None:
        return list(values)
    import mlx.core as mx

    total = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=cluster.group)
    return [float(v) for v in np.array(total)]


def gather_bytes(cluster: Cluster, data: bytes) -> list[bytes]:
    """Every rank's ``data`` (in rank order), on every rank."""
    if cluster.group is None:
        return [data]
    import mlx.core as mx

    sizes = [int(v) for v in np.array(mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32),
                                                                group=cluster.group))]
    buf = np.zeros(max(max(sizes), 1), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    gathered = np.array(mx.distributed.all_gather(mx.array(buf), group=cluster.group)).reshape(cluster.size, -1)
    return [gathered[r, : sizes[r]].tobytes() for r in range(cluster.size)]


def merge_parts(out: Path, fmt: str, items: list, parts: list[bytes], part_name: Path) -> int:
    """Rank 0: append the rows of ``parts`` that the output lacks, in item order; returns how many."""
    rows: dict[str, dict] = {}
    tmp = part_name.with_name(f".{part_name.name}.merge{os.getpid()}")
    for data in parts:  # parse each part with the same reader as the files (torn tails ignored)
        tmp.write_bytes(data)
        try:
            rows.update((r["file_name"], r) for r in read_rows(tmp, fmt))
        finally:
            tmp.unlink()
    sink = FileSink(out, fmt)
    try:
        merged = 0
        for item in items:
            row = rows.get(item.file_name)
            if row is not None and item.file_name not in sink.done:
                sink.write(row)
                merged += 1
    finally:
        sink.close()
    return merged
