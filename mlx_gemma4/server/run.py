"""Start the server: the model thread (loading in the background), the app, uvicorn."""

from __future__ import annotations

import asyncio
import logging

from ..batching.engine import Engine
from ..errors import InputError, ModelLoadError
from .app import ServerConfig, create_app

log = logging.getLogger("mlx_gemma4.server")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposed_warning(host: str) -> str | None:
    """The warning printed when the server listens beyond this machine."""
    if host in LOCAL_HOSTS:
        return None
    return (f"listening on {host}: anyone who can reach this machine can use the model"
            " (use --api-key, or keep the default --host 127.0.0.1)")


def _share_uvicorn_logging(level: str) -> None:
    """Our messages (model ready, load failure, the engine's unexpected errors) go where uvicorn's own go."""
    for name in ("mlx_gemma4.server", "mlx_gemma4.batching"):
        ours = logging.getLogger(name)
        ours.setLevel(level.upper())
        for handler in logging.getLogger("uvicorn.error").handlers:
            ours.addHandler(handler)
        ours.propagate = False


def serve(load_fn, config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8080, max_concurrency: int = 8,
          max_queue: int = 64, prompt_cache_bytes: int = 1 << 30, log_level: str = "info") -> int:
    """Run until interrupted → 0, or 2 / 1 when the model failed to load (bad input or checkpoint / other).

    The port is bound before the model loads: ``/health`` answers 503 until it is ready."""
    import uvicorn

    engine = Engine(load_fn, max_concurrency=max_concurrency, max_queue=max_queue,
                    prompt_cache_bytes=prompt_cache_bytes).start()
    app = create_app(engine, config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           timeout_graceful_shutdown=2))
    _share_uvicorn_logging(log_level)

    async def watch_loading() -> None:
        await asyncio.to_thread(engine.ready.wait)
        if engine.load_error is not None:
            log.error("the model failed to load: %s", engine.load_error)
            server.should_exit = True
            return
        log.info("model ready: %s", config.model_name)

    async def main() -> None:
        watcher = asyncio.create_task(watch_loading())
        await server.serve()
        watcher.cancel()

    try:
        asyncio.run(main())
    finally:
        engine.stop()
    if engine.load_error is None:
        return 0
    # A checkpoint that cannot be loaded is bad input (exit 2), as for every other command.
    return 2 if isinstance(engine.load_error, (InputError, ModelLoadError)) else 1


