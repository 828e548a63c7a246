"""Streaming HF → MLX conversion: one tensor (a few rows at a time) read, renamed, quantized, written.

Nothing ever holds the whole model: shard headers are planned from the source headers alone (output
shapes follow from the quantization policy in ``mlx_gemma4.quant``), then each tensor streams into
its place. Everything is written into a hidden folder beside OUT and moved into place at the very end,
so an interrupted run never leaves a half-written OUT; where OUT may be and what ``--force`` may replace
is ``outdir.py``'s rule (shared with ``synth``). Every refusal happens before anything is written.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_gemma4.errors import ConversionError, ConversionInputError
from mlx_gemma4.quant import (
    QuantSpec,
    module_spec,
    quantizable,
    quantization_block,
    quantize_weight,
    quantized_shapes,
)

from .model_card import model_card
from .options import DEFAULT_SHARD_BYTES, ComponentStats, ConversionResult, ConvertOptions
from .outdir import check_output, early_protected, protected_paths, remove_stale_staging, staging_folder
from .safetensors_io import DTYPES, PlannedTensor, ShardLayout, ShardWriter, read_rows, row_chunks
from .source import TOKENIZER_FILES, Source, open_source

__all__ = [
    "DEFAULT_SHARD_BYTES", "FLOAT_DTYPES", "ComponentStats", "ConversionResult", "ConvertOptions", "convert",
    "remove_stale_staging", "upload",
]

FLOAT_DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}
Progress = Callable[[int, int, str], None]  # (bytes done, bytes total, current tensor)


@dataclass
class Item:
    """One source tensor and what it becomes."""

    name: str  # MLX parameter path
    source: Any  # TensorInfo
    spec: QuantSpec | None
    outputs: list[PlannedTensor]

    @property
    def nbytes(self) -> int:
        """Bytes written for this tensor."""
        return sum(t.nbytes for t in self.outputs)


def component_of(name: str) -> str:
    """Report group of an MLX parameter path."""
    if "embed_tokens" in name:
        return "embedding / tied head"
    if ".self_attn." in name and "_proj" in name:
        return "attention linears"
    if ".mlp." in name:
        return "MLP linears"
    if name.startswith(("pre_projection", "post_projection", "masked_embedding")):
        return "drafter projections"
    if name.startswith(("vision_embedder", "embed_vision")):
        return "vision embedder"
    if name.startswith("embed_audio"):
        return "audio projection"
    return "norms & scalars"


def plan(source: Source, opts: ConvertOptions) -> list[Item]:
    """What every source tensor becomes (dtype, quantization, output tensors), decided up front."""
    dtype = FLOAT_DTYPES[opts.dtype]
    items = []
    for name in sorted(source.tensors, key=_natural_key):
        info = source.tensors[name]
        spec = None
        if name.endswith(".weight") and len(info.shape) == 2:
            spec = module_spec(name[: -len(".weight")], info.shape[-1], opts.bits, opts.group_size, opts.recipe)
        if spec is not None:
            base = name[: -len(".weight")]
            shapes = quantized_shapes(info.shape, spec)
            outputs = [
                PlannedTensor(f"{base}.weight", mx.uint32, shapes["weight"]),
                PlannedTensor(f"{base}.scales", dtype, shapes["scales"]),
                PlannedTensor(f"{base}.biases", dtype, shapes["biases"]),
            ]
        else:
            src_dtype = DTYPES[info.dtype][1]
            out_dtype = dtype if mx.issubdtype(src_dtype, mx.floating) else src_dtype
            outputs = [PlannedTensor(name, out_dtype, info.shape)]
        items.append(Item(name, info, spec, outputs))
    return items


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def shard_groups(items: list[Item], max_bytes: int) -> list[list[Item]]:
    """Consecutive items packed into shards of at most ``max_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[Item]] = [[]]
    size = 0
    for item in items:
        if shards[-1] and size + item.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


def write_item(writer: ShardWriter, item: Item, dtype: mx.Dtype) -> None:
    """Stream one source tensor into its planned output tensors, a chunk of rows at a time."""
    itemsize = DTYPES[item.source.dtype][0].itemsize
    for a, b in row_chunks(item.source.shape, itemsize):
        x = read_rows(item.source, a, b)
        if item.spec is not None:
            parts = quantize_weight(x.astype(dtype), item.spec)
            base = item.name[: -len(".weight")]
            mx.eval(*parts.values())
            _check_fits(item, x, list(parts.values()))
            for suffix, arr in parts.items():
                writer.write_rows(f"{base}.{suffix}", a, arr)
        else:
            out = item.outputs[0]
            kept = x.astype(out.dtype).reshape((b - a, *out.shape[1:])) if out.shape else x.astype(out.dtype)
            mx.eval(kept)
            _check_fits(item, x, [kept])
            writer.write_rows(out.name, a, kept)
            del kept
        del x
    mx.clear_cache()  # give the chunk buffers back now, not at exit: keeps peak RSS at one chunk


def _check_fits(item: Item, source: mx.array, written: list[mx.array]) -> None:
    """float16 tops out at 65504: a larger source value (or a scale computed from one) would be written
    as inf without a word. Refuse instead; a source that holds inf/NaN itself is copied as it is."""
    if not any(w.dtype == mx.float16 for w in written):
        return
    if all(mx.isfinite(w).all().item() for w in written if mx.issubdtype(w.dtype, mx.floating)):
        return
    if not mx.isfinite(source).all().item():
        return
    peak = mx.abs(source.astype(mx.float32)).max().item()
    raise ConversionInputError(
        f"{item.name}: values up to {peak:.4g} do not fit float16 (largest 65504) and would be written as inf; "
        "convert with --dtype bfloat16 or float32"
    )


def convert(
    src: str | Path, out: str | Path, opts: ConvertOptions, progress: Progress | None = None
) -> ConversionResult:
    """Convert a Hugging Face checkpoint (folder or hub id) into an MLX folder at ``out``.

    Every refusal (bad options, source, side file or output folder) comes before anything is written."""
    opts.check()
    out = Path(out).expanduser()
    check_output(out, opts.force, early_protected(src))  # before a hub download or reading the source
    source = open_source(src)
    no_tokenizer = [f for f in TOKENIZER_FILES if f in source.missing]
    if no_tokenizer and not source.is_assistant and not opts.no_tokenizer:
        raise ConversionInputError(
            f"{source.folder}: no {' or '.join(no_tokenizer)}, so the output could not be used by gemma4 "
            "generate/chat; copy the tokenizer files from the original checkpoint into it, or pass --no-tokenizer"
        )
    items = plan(source, opts)
    groups = shard_groups(items, opts.max_shard_bytes)
    total = sum(i.source.nbytes for i in items)
    dtype = FLOAT_DTYPES[opts.dtype]
    notes: list[str] = []
    needed = sum(i.nbytes for i in items) + sum((source.folder / f).stat().st_size for f in source.side_files)
    protected = protected_paths(source.folder, source.files)
    with staging_folder(out, opts.force, "convert", protected, needed, notes) as tmp:
        done = 0
        weight_map: dict[str, str] = {}
        for n, group in enumerate(groups, start=1):
            fname = "model.safetensors" if len(groups) == 1 else f"model-{n:05d}-of-{len(groups):05d}.safetensors"
            writer = ShardWriter(tmp / fname, ShardLayout([t for i in group for t in i.outputs]))
            try:
                for item in group:
                    if progress:
                        progress(done, total, item.name)
                    write_item(writer, item, dtype)
                    done += item.source.nbytes
                    weight_map.update({t.name: fname for t in item.outputs})
            finally:
                writer.close()
        if progress:
            progress(total, total, "")
        result = summarize(tmp, out, source, items, len(groups), opts)
        write_metadata(tmp, source, weight_map, result, opts)
    result.notes += notes
    return result


def summarize(
    tmp: Path, out: Path, source: Source, items: list[Item], shards: int, opts: ConvertOptions
) -> ConversionResult:
    """Sizes per component, true bits per weight, and warnings."""
    components: dict[str, ComponentStats] = {}
    for item in items:
        c = components.setdefault(component_of(item.name), ComponentStats())
        c.params += math.prod(item.source.shape)
        c.nbytes += item.nbytes
        s = item.spec
        c.precisions.add(f"{s.bits}-bit g{s.group_size}" if s else str(item.outputs[0].dtype).split(".")[-1])
    block = quantization_block(opts.bits, opts.group_size, {i.name[: -len(".weight")]: i.spec for i in items if i.spec})
    result = ConversionResult(
        out=out,
        source_bytes=source.nbytes,
        total_bytes=sum(i.nbytes for i in items),
        params=sum(c.params for c in components.values()),
        shards=shards,
        components=components,
        quantization=block,
        warnings=[],
    )
    result.missing_side_files = list(source.missing)
    if no_tok := [f for f in TOKENIZER_FILES if f in source.missing and not source.is_assistant]:
        result.warnings.append(
            f"NO TOKENIZER: the source has no {' or '.join(no_tok)}, so neither has {out}: gemma4 generate/chat "
            "and load(...)'s processor cannot use it until the original checkpoint's tokenizer files are copied in"
        )
    if opts.bits == 4 and result.bits_per_weight > 5:
        result.warnings.append(
            f"a '4-bit' conversion stores {result.bits_per_weight:.2f} bits per weight: tensors kept at higher "
            "precision dominate this model's size"
        )
    unquantized = [
        i.name for i in items
        if i.spec is None and opts.bits < 16 and len(i.source.shape) == 2
        and quantizable(i.name.removesuffix(".weight")) and i.source.shape[-1] % opts.group_size
    ]
    if unquantized:
        result.warnings.append(
            f"{len(unquantized)} linear weights kept float because their input width is not a multiple of "
            f"group size {opts.group_size} (e.g. {unquantized[0]})"
        )
    return result


def write_metadata(
    tmp: Path, source: Source, weight_map: dict[str, str], result: ConversionResult, opts: ConvertOptions
) -> None:
    """Index, config with the quantization block, side files (tokenizer, templates…) and a model card."""
    index = {"metadata": {"total_size": result.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(source.config)
    config.pop("quantization_config", None)
    config["torch_dtype"] = opts.dtype
    if "dtype" in config:
        config["dtype"] = opts.dtype
    if result.quantization:
        config["quantization"] = result.quantization
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in source.side_files:  # checked when the source was opened
        shutil.copyfile(source.folder / name, tmp / name)
    (tmp / "README.md").write_text(model_card(source, result, opts))


def upload(out: Path, repo_id: str) -> str:
    """Upload a converted folder to the hub with huggingface-hub; returns the repository URL."""
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(repo_id, exist_ok=True)
        upload_folder(repo_id=repo_id, folder_path=str(out), commit_message="Upload MLX conversion (mlx-gemma4)")
    except Exception as e:  # huggingface-hub raises many types (offline, HTTP, auth); all mean "not uploaded"
        why = f"{type(e).__name__}: {e}"
        raise ConversionError(f"upload to {repo_id} failed ({why}); the converted folder is kept at {out}") from e
    return str(url)
