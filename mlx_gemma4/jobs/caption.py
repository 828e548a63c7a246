"""``caption``: a folder (files, globs, lists) → one caption row per item, resumable, optionally across ranks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from .distributed import Cluster, all_sum, gather_bytes, join, merge_parts, part_path, shard
from .inputs import Item, collect_items
from .records import format_for, open_sink, read_rows
from .runner import JobOptions, JobSummary, run_job


class CaptionJob:
    """One ``caption`` run, in steps the CLI drives: ``__init__`` checks the inputs and the output (before any
    model loads), ``run`` captions this rank's items, ``finish`` merges the ranks and sums the counts."""

    def __init__(self, inputs: Sequence[str], out: Path | None, *, fmt: str | None = None,
                 recursive: bool = False, resume: bool = True, cluster: Cluster | None = None):
        self.items, self.root = collect_items(inputs, recursive=recursive)
        if out is None and fmt not in (None, "txt"):
            raise InputError(f"--format {fmt} needs --out FILE")
        self.fmt = "txt" if out is None else format_for(Path(out), fmt)
        self.out = Path(out) if out is not None else None
        self.cluster = cluster or join()
        self.mine = shard(self.items, self.cluster)
        self.distributed = self.cluster.size > 1 and self.fmt != "txt"  # txt files need no merge
        target = part_path(self.out, self.cluster) if self.distributed else self.out
        self.sink = open_sink(target, self.fmt, self.root, self.mine)
        if not resume and self.sink.done:
            self.sink.close()
            raise InputError(f"{target}: already holds {len(self.sink.done)} item(s); --no-resume never overwrites "
                             "an output: name another --out or move this one away")
        if self.distributed and self.out.exists():  # rows merged by an earlier run count as done
            self.sink.done |= {r["file_name"] for r in read_rows(self.out, self.fmt)}

    @property
    def todo(self) -> list[Item]:
        """This rank's items not yet in the output."""
        return [it for it in self.mine if it.file_name not in self.sink.done]

    def run(self, model, processor, opts: JobOptions, *, on_row: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> JobSummary:
        """Caption this rank's remaining items; the sink stays open until ``finish``."""
        try:
            return run_job(model, processor, self.mine, self.sink, opts, on_row=on_row, should_stop=should_stop)
        except BaseException:
            self.sink.close()
            raise

    def finish(self, summary: JobSummary) -> JobSummary:
        """Close the output; with several ranks, merge the parts on rank 0. Returns the counts of all ranks."""
        self.sink.close()
        counts = [summary.done, summary.failed, summary.skipped, summary.generation_tokens, summary.total,
                  float(summary.interrupted)]
        # Also the barrier before merging: every rank has closed its part (or was interrupted).
        done, failed, skipped, tokens, total, interrupted = all_sum(self.cluster, counts)
        if self.distributed and not interrupted:
            part = self.sink.path
            parts = gather_bytes(self.cluster, part.read_bytes())
            if self.cluster.rank == 0:
                merge_parts(self.out, self.fmt, self.items, parts, part)
            all_sum(self.cluster, [0.0])  # every rank waits until rank 0 has written the merged output
            part.unlink()
        return JobSummary(total=int(total), skipped=int(skipped), done=int(done), failed=int(failed),
                          generation_tokens=int(tokens), seconds=summary.seconds, batch_size=summary.batch_size,
                          interrupted=bool(interrupted))
