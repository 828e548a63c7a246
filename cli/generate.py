"""``gemma4 generate``: one prompt (text, ``-`` for stdin, ``@FILE``), the answer streamed or as one JSON object."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import options as o
from .report import PrefillProgress, err, load_generation, print_stats, result_json


def print_stream(chunks, verbose: bool = False):
    """Thoughts dimmed on stderr, the answer on stdout, the stats line last on stderr; returns the stats."""
    last = None
    for chunk in chunks:
        if chunk.channel == "answer":
            typer.echo(chunk.text, nl=False)
        else:
            err.print(chunk.text, style="dim", end="", markup=False, highlight=False, soft_wrap=True)
        last = chunk.stats or last
    typer.echo()
    if last is not None:
        print_stats(last, verbose)
    return last


@o.with_flag_groups
def generate_cmd(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The user message; - reads stdin, @FILE reads a file.")],
    flags: o.ModelFlags = o.MODEL_FLAGS,
    message: o.MessageFlags = o.MESSAGE_FLAGS,
    sampling: o.SamplingFlags = o.SAMPLING_FLAGS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (text, ids, stats) instead.")] = False,
) -> None:
    """Answer one prompt (with images / audio / videos), streaming the text."""
    from mlx_gemma4 import generate, stream_generate
    from mlx_gemma4.generation.inputs import user_message

    text = o.read_prompt(prompt)
    by_kind = message.by_kind()
    m, processor, request = load_generation(flags, sampling.request(flags.kv_bits, flags.max_kv_size))
    system = [{"role": "system", "content": message.system}] if message.system else []
    messages = [*system, user_message(text, by_kind)]
    files = {"images": by_kind["image"], "audio": by_kind["audio"], "videos": by_kind["video"]}
    progress = PrefillProgress()
    verbose = bool((ctx.obj or {}).get("verbose"))
    try:
        if as_json:
            result = generate(m, processor, messages, **files, request=request, progress=progress)
            typer.echo(json.dumps(result_json(result), ensure_ascii=False))
            print_stats(result.stats, verbose)
        else:
            print_stream(stream_generate(m, processor, messages, **files, request=request, progress=progress), verbose)
    finally:
        progress.close()


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the root app."""
    app.command("generate")(generate_cmd)
