"""``caption`` on the continuous-batching engine, in process: rows that join a running batch mid-decode
caption exactly what a generation of the item alone does (greedy), with and without a shared system turn."""

from __future__ import annotations

import shutil

import mlx.core as mx
import pytest
from PIL import Image

from mlx_gemma4 import generate, load
from mlx_gemma4.generation.request import GenerationRequest
from mlx_gemma4.generation.sampling import model_defaults
from mlx_gemma4.jobs.inputs import collect_items
from mlx_gemma4.jobs.records import FileSink
from mlx_gemma4.jobs.runner import JobOptions, build_messages, run_job
from tests.caption_helpers import EXAMPLES, jsonl_rows

MAX_TOKENS = 14
STOP_EVERY = 5  # the forced stop falls where the row's total length is a multiple of this


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    return load(tiny_ckpt.path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Images of several sizes (so their prompts, and with the stop rule below their captions, differ in length)."""
    root = tmp_path_factory.mktemp("sizes")
    shutil.copy(EXAMPLES / "chart.png", root / "a.png")
    shutil.copy(EXAMPLES / "scene.jpg", root / "b.jpg")
    shutil.copy(EXAMPLES / "rotated_note.jpg", root / "c.jpg")
    with Image.open(EXAMPLES / "scene.jpg") as im:
        for i, size in enumerate([(96, 200), (300, 90), (150, 150), (64, 48)]):
            im.resize(size).save(root / f"d{i}.png")
    return root


def stop_by_length(model):
    """A logits processor forcing a stop token where the row's length (prompt + generated) is a multiple of
    STOP_EVERY: items with different prompt lengths end after different numbers of tokens, deterministically,
    even on random weights."""
    stop = min(model_defaults(model).eos_token_ids)

    def process(history, logits):
        if history.shape[0] % STOP_EVERY:
            return logits
        return mx.where(mx.arange(logits.shape[-1]) == stop, mx.array(1e9, logits.dtype), logits)

    return process


@pytest.mark.parametrize("batch_size,system", [(2, None), (3, "You write captions for a photo archive.")])
def test_rows_joining_mid_decode_equal_each_item_alone(loaded, folder, tmp_path, batch_size, system):
    model, processor = loaded
    request = GenerationRequest(max_tokens=MAX_TOKENS, temperature=0.0, logits_processors=(stop_by_length(model),))
    items, _ = collect_items([str(folder)])
    sink = FileSink(tmp_path / "rows.jsonl", "jsonl")
    opts = JobOptions(system=system, batch_size=batch_size, request=request)
    summary = run_job(model, processor, items, sink, opts)
    sink.close()
    assert (summary.done, summary.failed) == (len(items), 0)
    rows = {r["file_name"]: r for r in jsonl_rows(tmp_path / "rows.jsonl")}
    assert sorted(rows) == [it.file_name for it in items]
    lengths = set()
    for it in items:
        alone = generate(model, processor, build_messages(it, opts), images=[str(it.path)], request=request)
        row = rows[it.file_name]
        assert row["caption"] == alone.text.strip(), it.file_name
        assert row["generation_tokens"] == alone.stats.generation_tokens
        assert row["prompt_tokens"] == alone.stats.prompt_tokens
        assert row["finish_reason"] == alone.stats.finish_reason
        lengths.add(row["generation_tokens"])
    assert len(lengths) >= 3, f"captions must differ in length so rows leave and join mid-decode: {lengths}"
    # With a system turn every item after the first resumes from its snapshot; without one nothing is shared.
    assert (summary.cached_tokens > 0) == (system is not None)


def test_max_tokens_zero_generates_nothing_like_generate(loaded, folder, tmp_path):
    """A job asking for no tokens ends after the prefill with none (before: the engine sampled one anyway,
    so ``caption --max-tokens 0`` wrote a one-word caption and counted a generated token)."""
    model, processor = loaded
    request = GenerationRequest(max_tokens=0, temperature=0.0)
    items, _ = collect_items([str(folder / "a.png")])
    sink = FileSink(tmp_path / "rows.jsonl", "jsonl")
    summary = run_job(model, processor, items, sink, JobOptions(batch_size=2, request=request))
    sink.close()
    assert (summary.done, summary.failed) == (1, 0)
    [row] = jsonl_rows(tmp_path / "rows.jsonl")
    alone = generate(model, processor, build_messages(items[0], JobOptions()), images=[str(items[0].path)],
                     request=request)
    assert alone.stats.generation_tokens == 0 and alone.text == ""
    assert (row["caption"], row["generation_tokens"], row["finish_reason"]) == ("", 0, "length")
