"""The ASGI app (Starlette): OpenAI's chat/completions/models endpoints over the model-thread engine.

Handlers never touch MLX: they parse, preprocess media and tokenize in worker threads, submit a job,
and await its events, which the model thread hands over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..batching.engine import Busy, Engine
from ..batching.rows import Delta, Done, Failed
from .errors import APIError, as_api_error, bad_request
from .jobs import Limits, encode_chat, encode_text, make_job
from .parsing import Settings, extract_json, parse_chat, parse_completion
from .responses import ChunkWriter, chat_completion, new_id, sse, text_completion

log = logging.getLogger("mlx_gemma4.server")


@dataclass
class ServerConfig:
    """What the app needs besides the engine."""

    model_name: str
    aliases: frozenset[str] = frozenset()
    allow_local_files: Path | None = None
    max_body_bytes: int = 64 << 20
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)


def error_response(e: APIError) -> JSONResponse:
    """An OpenAI error object with its status."""
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class _Events:
    """The model thread's events for one job, delivered into this event loop."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def emit(self, event) -> None:
        """Called on the model thread."""
        # RuntimeError: the event loop has closed (server shutting down), nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class Handlers:
    """The endpoints, sharing one engine and config."""

    def __init__(self, engine: Engine, config: ServerConfig):
        self.engine, self.config = engine, config

    # -- checks -----------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise APIError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def _check_ready(self) -> None:
        if self.engine.load_error is not None:
            raise APIError(503, f"the model failed to load: {self.engine.load_error}", code="model_load_failed")
        if not self.engine.loaded:
            raise APIError(503, "the model is still loading; retry shortly", code="model_loading",
                           headers={"Retry-After": "2"})

    def _check_model(self, name: object) -> None:
        names = {self.config.model_name, *self.config.aliases}
        if isinstance(name, str) and name not in names:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.config.model_name!r}",
                           param="model", code="model_not_found")

    async def _body(self, request: Request) -> object:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_big = APIError(413, f"the request body is larger than the server's limit ({limit >> 20} MB, "
                                "--max-body-mb)", code="request_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise too_big
        try:
            return json.loads(data)
        except ValueError as e:
            raise bad_request(f"the request body is not valid JSON ({e})") from None

    # -- endpoints --------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """200 when the model is ready, 503 while it loads (or if loading failed)."""
        self._check_ready()
        return JSONResponse({"status": "ok", "model": self.config.model_name, "requests": self.engine.pending})

    async def models(self, request: Request) -> Response:
        """The one model this server serves."""
        self._authorize(request)
        return JSONResponse({"object": "list", "data": [
            {"id": self.config.model_name, "object": "model", "created": 0, "owned_by": "mlx-gemma4"}]})

    async def chat(self, request: Request) -> Response:
        """``POST /v1/chat/completions``."""
        self._authorize(request)
        body = await self._body(request)
        self._check_model(body.get("model") if isinstance(body, dict) else None)
        self._check_ready()
        req = await run_in_threadpool(parse_chat, body, self.config.allow_local_files)
        ids, arrays = await run_in_threadpool(
            encode_chat, self.engine.model, self.engine.processor, req.messages, req.settings.thinking)
        return await self._answer(request, ids, arrays, req.settings, True, _wants_ids(body))

    async def completions(self, request: Request) -> Response:
        """``POST /v1/completions`` (plain text, no chat template)."""
        self._authorize(request)
        body = await self._body(request)
        self._check_model(body.get("model") if isinstance(body, dict) else None)
        self._check_ready()
        req = parse_completion(body)
        ids, arrays = await run_in_threadpool(encode_text, self.engine.processor, req.prompt)
        return await self._answer(request, ids, arrays, req.settings, False, _wants_ids(body))

    # -- running a job ----------------------------------------------------------------------------

    async def _answer(self, request, ids, arrays, s: Settings, chat: bool, token_ids: bool) -> Response:
        events = _Events()
        job = make_job(self.engine.model, self.engine.tokenizer, ids, arrays, s, self.config.limits, events.emit)
        try:
            self.engine.submit(job)
        except Busy:
            raise APIError(503, f"the server is busy ({self.engine.pending} requests running or queued); retry "
                           "shortly", code="queue_full", headers={"Retry-After": "1"}) from None
        rid = new_id("chatcmpl" if chat else "cmpl")
        name = self.config.model_name
        if s.stream:
            writer = ChunkWriter(rid, name, chat)
            return StreamingResponse(_stream(job, events, writer, s), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            done = await _collect(request, events)
        finally:
            job.cancelled.set()  # a no-op once finished; frees the slot if the client went away
        if not chat:
            return JSONResponse(text_completion(rid, name, done, token_ids))
        content = done.answer
        if s.json_mode:
            content = _valid_json(done)
        return JSONResponse(chat_completion(rid, name, done, content, token_ids))


def _wants_ids(body) -> bool:
    return isinstance(body, dict) and body.get("return_token_ids") is True


def _valid_json(done: Done) -> str:
    found = extract_json(done.answer)
    if found is None:
        hint = " (cut at max_tokens: raise it)" if done.finish_reason == "length" else ""
        raise APIError(500, f"the model's answer is not a valid JSON object{hint}: {done.answer[:200]!r}",
                       code="invalid_json_output")
    return found


async def _collect(request: Request, events: _Events) -> Done:
    """Wait for the end of a job (ending it early if the client disconnects)."""
    while True:
        try:
            ev = await asyncio.wait_for(events.queue.get(), timeout=1.0)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                raise APIError(499, "client disconnected") from None
            continue
        if isinstance(ev, Failed):
            raise as_api_error(ev.error)
        if isinstance(ev, Done):
            return ev


async def _stream(job, events: _Events, writer: ChunkWriter, s: Settings) -> AsyncIterator[str]:
    """Server-sent events for one job; leaving early (a disconnect) cancels the generation."""
    try:
        first = writer.start()
        if first:
            yield first
        while True:
            ev = await events.queue.get()
            if isinstance(ev, Delta):
                out = writer.delta(ev)
                if out:
                    yield out
            elif isinstance(ev, Failed):
                yield sse(as_api_error(ev.error).body()) + sse("[DONE]")
                return
            elif isinstance(ev, Done):
                if s.json_mode and writer.chat and extract_json(ev.answer) is None:
                    yield sse(APIError(500, "the model's answer is not a valid JSON object",
                                       code="invalid_json_output").body())
                yield writer.end(ev, s.include_usage)
                return
    finally:
        job.cancelled.set()


def _guard(handler):
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await handler(request)
        except APIError as e:
            return error_response(e)
        except Exception as e:  # never a traceback in a response: log it, answer with a short message
            log.exception("unexpected error in %s", request.url.path)
            return error_response(as_api_error(e))
        finally:
            log.debug("%s %s %.3fs", request.method, request.url.path, time.perf_counter() - started)

    return endpoint


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))


def create_app(engine: Engine, config: ServerConfig) -> Starlette:
    """The Starlette app serving ``engine``."""
    h = Handlers(engine, config)
    routes = [
        Route("/health", _guard(h.health), methods=["GET"]),
        Route("/v1/models", _guard(h.models), methods=["GET"]),
        Route("/v1/chat/completions", _guard(h.chat), methods=["POST"]),
        Route("/v1/completions", _guard(h.completions), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
