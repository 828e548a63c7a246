"""``gemma4 serve``: an OpenAI-compatible HTTP server (needs the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mlx_gemma4.errors import InputError

err = Console(stderr=True)


def serve_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder or hub id.")],
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 exposes the server to the network).")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    name: Annotated[str | None, typer.Option("--name", help="Model id clients use (default: the --model "
                                                             "folder name).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="GEMMA4_API_KEY",
                                                help="Require 'Authorization: Bearer KEY'.")] = None,
    allow_local_files: Annotated[Path | None, typer.Option(
        "--allow-local-files", help="Let image_url parts name file:// paths inside this directory.")] = None,
    max_concurrency: Annotated[int, typer.Option(help="Requests decoded together in one batch.")] = 8,
    max_queue: Annotated[int, typer.Option(help="Requests waiting beyond those; more get 503 + Retry-After.")] = 64,
    max_tokens_cap: Annotated[int, typer.Option(help="Upper bound on any request's max_tokens.")] = 4096,
    default_max_tokens: Annotated[int, typer.Option(help="max_tokens when a request gives none.")] = 512,
    timeout: Annotated[float, typer.Option(help="Seconds a request may run (0 = no limit).")] = 600.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted (413 beyond).")] = 64.0,
    prompt_cache_mb: Annotated[float, typer.Option(help="Memory for reusable prompt prefixes (0 = off).")] = 1024.0,
    context_length: Annotated[int, typer.Option(help="Longest prompt + answer (0 = the model's own).")] = 0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the model over OpenAI's chat-completions API (images, audio, streaming)."""
    try:
        from mlx_gemma4.server.app import ServerConfig
        from mlx_gemma4.server.jobs import Limits
        from mlx_gemma4.server.run import exposed_warning, serve
    except ImportError as e:
        raise InputError(f"gemma4 serve needs the serve extra: pip install 'mlx-gemma4[serve]' ({e})") from None
    positive = (("--max-concurrency", max_concurrency), ("--port", port), ("--max-tokens-cap", max_tokens_cap))
    for label, value in positive:
        if value < 1:
            raise InputError(f"{label} must be >= 1, got {value}")
    if max_queue < 0 or timeout < 0 or max_body_mb <= 0 or prompt_cache_mb < 0 or context_length < 0:
        raise InputError("--max-queue, --timeout, --prompt-cache-mb, --context-length must be >= 0; --max-body-mb > 0")
    if allow_local_files is not None and not allow_local_files.is_dir():
        raise InputError(f"--allow-local-files: {allow_local_files} is not a directory")
    warning = exposed_warning(host)
    if warning:
        err.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    served = name or Path(model.rstrip("/")).name
    limits = Limits(context_length=context_length, max_tokens_cap=max_tokens_cap,
                    default_max_tokens=min(default_max_tokens, max_tokens_cap), timeout_s=timeout or None)
    config = ServerConfig(served, frozenset({model}), allow_local_files, int(max_body_mb * (1 << 20)), api_key, limits)

    def load_model():
        from mlx_gemma4 import load

        return load(model)

    err.print(f"serving {served} on http://{host}:{port}/v1 (loading the model…)")
    code = serve(load_model, config, host=host, port=port, max_concurrency=max_concurrency, max_queue=max_queue,
                 prompt_cache_bytes=int(prompt_cache_mb * (1 << 20)), log_level=log_level)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve_cmd)
