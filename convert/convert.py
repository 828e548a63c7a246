"""Streaming HF → MLX conversion: one tensor (a few rows at a time) read, renamed, quantized, written.

Nothing ever holds the whole model: shard headers are planned from the source headers alone (output
shapes follow from the quantization policy in ``mlx_gemma4.quant``), then each tensor streams into
its place. Everything is written into a hidden folder beside OUT and moved into place at the very end,
so an interrupted run never leaves a half-written OUT.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_gemma4.errors import ConversionError
from mlx_gemma4.quant import (
    BITS_CHOICES,
    GROUP_SIZES,
    RECIPES,
    QuantSpec,
    module_spec,
    quantizable,
    quantization_block,
    quantize_weight,
    quantized_shapes,
)

from .model_card import model_card
from .safetensors_io import DTYPES, PlannedTensor, ShardLayout, ShardWriter, read_rows, row_chunks
from .source import SIDE_FILES, Source, open_source

FLOAT_DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}
DEFAULT_SHARD_BYTES = 4 << 30
Progress = Callable[[int, int, str], None]  # (bytes done, bytes total, current tensor)


@dataclass(frozen=True)
class ConvertOptions:
    """What to produce."""

    bits: int = 4
    group_size: int = 64
    recipe: str = "uniform"
    dtype: str = "bfloat16"
    max_shard_bytes: int = DEFAULT_SHARD_BYTES
    force: bool = False

    def check(self) -> None:
        """Raise ConversionError for an impossible combination."""
        if self.bits not in BITS_CHOICES:
            raise ConversionError(f"--bits must be one of {BITS_CHOICES}, not {self.bits}")
        if self.group_size not in GROUP_SIZES:
            raise ConversionError(f"--group-size must be one of {GROUP_SIZES}, not {self.group_size}")
        if self.recipe not in RECIPES:
            raise ConversionError(f"--recipe must be one of {RECIPES}, not {self.recipe!r}")
        if self.dtype not in FLOAT_DTYPES:
            raise ConversionError(f"--dtype must be one of {tuple(FLOAT_DTYPES)}, not {self.dtype!r}")
        if self.max_shard_bytes < 1:
            raise ConversionError("the shard size limit must be positive")


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


@dataclass
class ComponentStats:
    """Size of one component of the converted model."""

    params: int = 0
    nbytes: int = 0
    precisions: set[str] = field(default_factory=set)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per original parameter (scales and biases included)."""
        return 8 * self.nbytes / max(self.params, 1)


@dataclass
class ConversionResult:
    """What a conversion produced, for the report."""

    out: Path
    source_bytes: int
    total_bytes: int
    params: int
    shards: int
    components: dict[str, ComponentStats]
    quantization: dict[str, Any] | None
    warnings: list[str]

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per parameter over the whole model."""
        return 8 * self.total_bytes / max(self.params, 1)


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
            for suffix, arr in parts.items():
                writer.write_rows(f"{base}.{suffix}", a, arr)
        else:
            out = item.outputs[0]
            x = x.astype(out.dtype).reshape((b - a, *out.shape[1:])) if out.shape else x.astype(out.dtype)
            mx.eval(x)
            writer.write_rows(out.name, a, x)
        del x
    mx.clear_cache()  # give the chunk buffers back now, not at exit: keeps peak RSS at one chunk


def convert(
    src: str | Path, out: str | Path, opts: ConvertOptions, progress: Progress | None = None
) -> ConversionResult:
    """Convert a Hugging Face checkpoint (folder or hub id) into an MLX folder at ``out``."""
    opts.check()
    out = Path(out).expanduser()
    source = open_source(src)
    if out.resolve() == source.folder.resolve():
        raise ConversionError(f"{out}: the output folder is the source folder")
    items = plan(source, opts)
    groups = shard_groups(items, opts.max_shard_bytes)
    total = sum(i.source.nbytes for i in items)
    dtype = FLOAT_DTYPES[opts.dtype]
    with staging_folder(out, opts.force) as tmp:
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
    for name in SIDE_FILES:
        if (source.folder / name).is_file():
            shutil.copyfile(source.folder / name, tmp / name)
    (tmp / "README.md").write_text(model_card(source, result, opts))


@contextmanager
def staging_folder(out: Path, force: bool) -> Iterator[Path]:
    """A hidden folder beside ``out`` that becomes ``out`` only when the block finishes without error."""
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out} exists and is not a folder")
    if out.exists() and not force:
        raise ConversionError(f"{out} already exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    tmp = out.parent / f".{out.name}.converting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:  # includes KeyboardInterrupt: an interrupted run leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def remove_stale_staging(out: Path) -> None:
    """Remove staging folders of earlier runs into ``out`` whose process is gone (e.g. killed with -9)."""
    for p in out.parent.glob(f".{out.name}.converting-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
