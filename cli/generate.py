"""``gemma4 generate``: one prompt (text, ``-`` for stdin, ``@FILE``), the answer streamed or as one JSON object."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mlx_gemma4.hub import DEFAULT_MODEL

from . import options as o
from .report import PrefillProgress, err, load, load_draft, print_stats, result_json


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


def generate_cmd(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The user message; - reads stdin, @FILE reads a file.")],
    model: o.Model = DEFAULT_MODEL,
    bits: o.Bits = 4,
    image: o.Images = None,
    audio: o.Audio = None,
    video: o.Videos = None,
    system: o.System = None,
    max_tokens: o.MaxTokens = o.DEFAULT_MAX_TOKENS,
    temp: o.Temp = None,
    top_p: o.TopP = None,
    top_k: o.TopK = None,
    min_p: o.MinP = None,
    repetition_penalty: o.RepetitionPenalty = None,
    seed: o.Seed = None,
    stop: o.Stop = None,
    image_tokens: o.ImageTokens = None,
    kv_bits: o.KvBits = None,
    max_kv_size: o.MaxKvSize = None,
    draft: o.DraftOpt = "auto",
    split_audio: o.SplitAudio = True,
    thinking: o.Thinking = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (text, ids, stats) instead.")] = False,
) -> None:
    """Answer one prompt (with images / audio / videos), streaming the text."""
    from mlx_gemma4 import generate, stream_generate

    text = o.read_prompt(prompt)
    media = {"images": list(image or ()), "audio": list(audio or ()), "videos": list(video or ())}
    o.check_files(media["images"], media["audio"], media["videos"])
    request = o.build_request(max_tokens=max_tokens, temp=temp, top_p=top_p, top_k=top_k, min_p=min_p,
                              repetition_penalty=repetition_penalty, seed=seed, stop=stop, thinking=thinking,
                              kv_bits=kv_bits, max_kv_size=max_kv_size)
    m, processor = load(model, bits, image_tokens, split_audio)
    drafter = load_draft(o.draft_source(draft, model), bits, m, draft != "auto")
    request = request.replace(draft_model=drafter)
    from mlx_gemma4.generation.inputs import user_message

    by_kind = {"image": media["images"], "audio": media["audio"], "video": media["videos"]}
    messages = ([{"role": "system", "content": system}] if system else []) + [user_message(text, by_kind)]
    progress = PrefillProgress()
    verbose = bool((ctx.obj or {}).get("verbose"))
    try:
        if as_json:
            result = generate(m, processor, messages, **media, request=request, progress=progress)
            typer.echo(json.dumps(result_json(result), ensure_ascii=False))
            print_stats(result.stats, verbose)
        else:
            print_stream(stream_generate(m, processor, messages, **media, request=request, progress=progress), verbose)
    finally:
        progress.close()


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the root app."""
    app.command("generate")(generate_cmd)
