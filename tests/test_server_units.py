"""The server's parts without a server process: request parsing, media, error objects, the app's
checks (with a model that never loads), the row bookkeeping and the continuous-batching engine."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from mlx_gemma4 import generate, load
from mlx_gemma4.batching.engine import Busy, Engine
from mlx_gemma4.batching.rows import Delta, Done, Failed, Row
from mlx_gemma4.server.app import ServerConfig, create_app
from mlx_gemma4.server.errors import APIError, as_api_error
from mlx_gemma4.server.jobs import Limits, encode_chat, make_job
from mlx_gemma4.server.parsing import JSON_HINT, extract_json, parse_chat, parse_completion
from mlx_gemma4.server.responses import ChunkWriter, chat_completion
from tests.server_helpers import small_vocab_checkpoint

B64 = base64.b64encode(b"\x89PNG fake").decode()


# -- parsing ----------------------------------------------------------------------------------------


def test_chat_parts_become_processor_items(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png bytes")
    body = {"model": "m", "max_completion_tokens": 7, "max_tokens": 99, "temperature": 0, "stop": "x",
            "stream": True, "stream_options": {"include_usage": True}, "seed": 3, "top_k": 5, "min_p": 0.1,
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
                    {"type": "image_url", "image_url": {"url": (tmp_path / "a.png").as_uri()}},
                    {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}},
                    {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{B64}"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]}
    req = parse_chat(body, allow_dir=tmp_path)
    assert req.messages[0] == {"role": "system", "content": "be brief"}
    items = req.messages[1]["content"]
    assert [i["type"] for i in items] == ["text", "image", "image", "audio", "video"]
    assert items[1]["image"] == b"\x89PNG fake" and items[2]["image"] == b"png bytes"
    assert req.messages[2] == {"role": "assistant", "content": "ok"}
    s = req.settings
    assert (s.max_tokens, s.temperature, s.stop, s.stream, s.include_usage, s.seed, s.top_k) == (
        7, 0.0, ("x",), True, True, 3, 5)


@pytest.mark.parametrize("extra,on", [
    ({}, False), ({"reasoning_effort": "high"}, True), ({"reasoning_effort": "none"}, False),
    ({"thinking": {"type": "enabled"}}, True), ({"thinking": True}, True),
    ({"chat_template_kwargs": {"enable_thinking": True}}, True),
])
def test_thinking_switches(extra, on):
    assert parse_chat({"messages": [{"role": "user", "content": "hi"}], **extra}).settings.thinking is on


def test_json_mode_adds_a_hint_and_validation_finds_the_object():
    req = parse_chat({"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]})
    assert req.settings.json_mode and req.messages[0] == {"role": "system", "content": JSON_HINT}
    assert extract_json('Sure! ```json\n{"a": [1, 2]}\n```') == '{"a": [1, 2]}'
    assert extract_json("no json here") is None and extract_json("[1, 2]") is None


@pytest.mark.parametrize("body,param", [
    ({"messages": "hi"}, "messages"),
    ({"n": 3, "messages": [{"role": "user", "content": "hi"}]}, "n"),
    ({"top_p": 0, "messages": [{"role": "user", "content": "hi"}]}, "top_p"),
    ({"seed": -1, "messages": [{"role": "user", "content": "hi"}]}, "seed"),
    ({"max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"stop": [1, 2], "messages": [{"role": "user", "content": "hi"}]}, "stop"),
    ({"logprobs": True, "messages": [{"role": "user", "content": "hi"}]}, "logprobs"),
    ({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "hi"}]}, "tools"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:;base64,%%"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/hosts"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
])
def test_bad_fields_are_400_naming_the_field(body, param):
    with pytest.raises(APIError) as e:
        parse_chat(body)
    assert e.value.status == 400 and e.value.param == param
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_local_files_only_inside_the_allowed_dir(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir(), outside.mkdir()
    (outside / "b.png").write_bytes(b"x")
    (inside / "link.png").symlink_to(outside / "b.png")
    escapes = (outside / "b.png", inside / "link.png", inside / ".." / "out" / "b.png")
    for url in (p.as_uri() for p in escapes):
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        with pytest.raises(APIError, match="outside the allowed directory"):
            parse_chat(body, allow_dir=inside)


def test_completion_prompt():
    assert parse_completion({"prompt": ["Once upon"], "max_tokens": 3}).prompt == "Once upon"
    with pytest.raises(APIError):
        parse_completion({"prompt": ["a", "b"]})


# -- the app's checks, with a model that is still loading -------------------------------------------


def test_app_while_loading_then_failed_load():
    release = threading.Event()

    def slow_load():
        release.wait(10)
        raise RuntimeError("no weights here")

    engine = Engine(slow_load).start()
    app = create_app(engine, ServerConfig("m", api_key="k", max_body_bytes=1000))
    auth = {"Authorization": "Bearer k"}
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and "retry-after" in r.headers
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert c.post("/v1/chat/completions", json=chat, headers=auth).status_code == 503
        assert c.post("/v1/chat/completions", json=chat).status_code == 401
        assert c.post("/v1/chat/completions", json=chat, headers={"Authorization": "Bearer kk"}).status_code == 401
        assert c.post("/v1/chat/completions", json={**chat, "model": "x"}, headers=auth).status_code == 404
        assert c.post("/v1/chat/completions", content=b"x" * 2000, headers=auth).status_code == 413
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == "m"
        assert c.get("/nope").json()["error"]["type"] == "not_found_error"
        release.set()
        engine.ready.wait(10)
        r = c.get("/health")
        assert r.status_code == 503 and "no weights here" in r.json()["error"]["message"]


def test_queue_limit():
    engine = Engine(lambda: None, max_concurrency=1, max_queue=1)  # never started: jobs just wait
    engine.submit(object())
    engine.submit(object())
    with pytest.raises(Busy):
        engine.submit(object())


# -- rows and the engine on a real (tiny) model ------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_vocab_checkpoint(tmp_path_factory.mktemp("units") / "small")


@pytest.fixture(scope="module")
def reference(ckpt):
    return load(ckpt)


@pytest.fixture(scope="module")
def engine(ckpt):
    eng = Engine(lambda: load(ckpt), max_concurrency=8).start()
    eng.ready.wait(120)
    assert eng.loaded, eng.load_error
    yield eng
    eng.stop()


def test_row_splits_thought_and_answer(reference):
    model, processor = reference
    tok = processor.tokenizer
    vocab = tok.get_vocab()
    events = []
    from mlx_gemma4.server.parsing import Settings

    job = make_job(model, tok, encode_chat(model, processor, [{"role": "user", "content": "hi"}], True)[0], {},
                   Settings(max_tokens=50, temperature=0, thinking=True), Limits(), events.append)
    row = Row(job, tok, prompt_ids=[2, 3], cached=0)
    words = lambda text: processor.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    for t in [vocab["<|channel>"], *words("thought\nkato tami"), vocab["<channel|>"], *words("the answer"),
              vocab["<turn|>"]]:
        row.accept(t)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and row.done
    assert done.thinking.strip() == "kato tami" and done.answer.strip() == "the answer"
    assert "".join(e.text for e in events if isinstance(e, Delta) and e.channel == "thought") == done.thinking
    message = chat_completion("id", "m", done, done.answer, False)["choices"][0]["message"]
    assert message["reasoning_content"] == done.thinking and message["content"] == done.answer
    # Streamed, the same pieces go out as delta.reasoning_content / delta.content chunks, in order.
    import json

    writer = ChunkWriter("id", "m", chat=True)
    deltas = [json.loads(writer.delta(e)[6:])["choices"][0]["delta"] for e in events
              if isinstance(e, Delta) and e.text]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == done.thinking
    assert "".join(d.get("content", "") for d in deltas) == done.answer
    assert all(len(d) == 1 for d in deltas)  # each chunk carries one of the two, never both


def _submit(engine, reference, messages, max_tokens, on_event=None, limits=None, **settings):
    from mlx_gemma4.server.parsing import Settings

    model, processor = reference
    ids, arrays = encode_chat(model, processor, messages, False)
    out = {"events": [], "done": threading.Event()}

    def emit(ev):
        out["events"].append(ev)
        if on_event:
            on_event(ev)
        if isinstance(ev, (Done, Failed)):
            out["done"].set()

    engine.submit(make_job(model, engine.tokenizer, ids, arrays, Settings(max_tokens=max_tokens, **settings),
                           limits or Limits(), emit))
    return out


def test_rows_join_and_leave_the_batch_mid_decode(engine, reference):
    """Each job is submitted when the previous one has produced 3 pieces (so it joins a running batch),
    and each stops at a different length (so rows leave while others go on); prompts are longer and
    shorter than the 16-token sliding window. Every row's tokens equal its generation alone."""
    prompts = [f"question {i} : " + "what is the world " * (3 * i) for i in range(6)]
    lengths = [6 + 4 * i for i in range(6)]
    runs: list[dict] = []

    def chain(i):
        seen = {"pieces": 0, "chained": False}

        def on_event(ev):  # on the model thread: the next job is queued while this one decodes
            seen["pieces"] += isinstance(ev, Delta)
            if (seen["pieces"] == 3 or isinstance(ev, (Done, Failed))) and not seen["chained"]:
                seen["chained"] = True
                if i + 1 < len(prompts):
                    chain(i + 1)

        runs.append(_submit(engine, reference, [{"role": "user", "content": prompts[i]}], lengths[i], on_event,
                            temperature=0))

    chain(0)
    deadline = time.monotonic() + 120
    while (len(runs) < len(prompts) or not all(r["done"].is_set() for r in runs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for i, run in enumerate(runs):
        done = run["events"][-1]
        expected = generate(*reference, [{"role": "user", "content": prompts[i]}], temperature=0,
                            max_tokens=lengths[i])
        assert isinstance(done, Done) and done.token_ids == expected.token_ids and done.answer == expected.text


def test_seeded_row_draws_the_same_in_a_batch(engine, reference):
    msg = [{"role": "user", "content": "say something"}]
    alone = _submit(engine, reference, msg, 12, temperature=1.0, seed=11)
    assert alone["done"].wait(60)
    others = [_submit(engine, reference, [{"role": "user", "content": f"other {i}"}], 12, temperature=1.0)
              for i in range(3)]
    together = _submit(engine, reference, msg, 12, temperature=1.0, seed=11)
    for r in [*others, together]:
        assert r["done"].wait(60)
    assert together["events"][-1].token_ids == alone["events"][-1].token_ids


def test_request_timeout_ends_the_row_with_504(engine, reference):
    run = _submit(engine, reference, [{"role": "user", "content": "go on"}], 500, limits=Limits(timeout_s=1e-6),
                  temperature=0)
    assert run["done"].wait(60)
    failed = run["events"][-1]
    assert isinstance(failed, Failed) and as_api_error(failed.error).status == 504
    ok = _submit(engine, reference, [{"role": "user", "content": "hi"}], 3, temperature=0)
    assert ok["done"].wait(60) and isinstance(ok["events"][-1], Done)  # the slot was freed
    assert engine.pending == 0


def test_queue_full_is_503_with_retry_after(ckpt):
    engine = Engine(lambda: load(ckpt), max_concurrency=1, max_queue=0).start()
    try:
        engine.ready.wait(120)
        app = create_app(engine, ServerConfig("m"))
        # The first request must still hold the slot when the second arrives: 400 tokens of this tiny model
        # could finish first on a busy machine (seen once in ~15 runs), the cap of 4000 cannot.
        body = {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 4000, "temperature": 0}
        with TestClient(app) as c:
            with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                assert next(r.iter_lines()).startswith("data: ")  # the first request holds the only slot
                busy = c.post("/v1/chat/completions", json={**body, "max_tokens": 2})
                assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
                assert busy.json()["error"]["code"] == "queue_full"
            deadline = time.monotonic() + 30
            while engine.pending and time.monotonic() < deadline:  # the stream was closed: its slot frees
                time.sleep(0.05)
            assert c.post("/v1/chat/completions", json={**body, "max_tokens": 2}).status_code == 200
    finally:
        engine.stop()


def test_only_loopback_binds_quietly():
    from mlx_gemma4.server.run import exposed_warning

    assert exposed_warning("127.0.0.1") is None and exposed_warning("localhost") is None
    assert "--api-key" in exposed_warning("0.0.0.0")


def test_server_logs_the_engine_where_uvicorn_logs(monkeypatch):
    """The batching engine is a library (caption uses it too) with its own logger; `gemma4 serve` sends it,
    like its own, to uvicorn's handlers, so an unexpected prefill error's traceback reaches the server log."""
    import logging

    from mlx_gemma4.batching import engine
    from mlx_gemma4.server.run import _share_uvicorn_logging

    handler = logging.StreamHandler()
    uvicorn_log = logging.getLogger("uvicorn.error")
    monkeypatch.setattr(uvicorn_log, "handlers", [handler])
    for name in ("mlx_gemma4.server", "mlx_gemma4.batching"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "level", logger.level)
    _share_uvicorn_logging("warning")
    assert engine.log.name == "mlx_gemma4.batching"
    assert engine.log.handlers == [handler] and not engine.log.propagate
    assert logging.getLogger("mlx_gemma4.server").handlers == [handler]


def test_an_id_outside_the_vocabulary_fails_its_job_not_the_engine(engine, reference):
    """A tokenizer with more tokens than the embedding table (an added token past the vocabulary) gives ids
    the engine must not embed: the job fails with a 400, and the engine serves the next one."""
    from mlx_gemma4.server.parsing import Settings

    model, _ = reference
    vocab = model.config.text_config.vocab_size
    events, done = [], threading.Event()

    def emit(ev):
        events.append(ev)
        if isinstance(ev, (Done, Failed)):
            done.set()

    ids = np.array([[2, 100, vocab]], np.int32)
    engine.submit(make_job(model, engine.tokenizer, ids, {}, Settings(max_tokens=3), Limits(), emit))
    assert done.wait(60)
    assert isinstance(events[-1], Failed) and as_api_error(events[-1].error).status == 400
    assert f"token id {vocab} is outside the vocabulary" in str(events[-1].error)
    ok = _submit(engine, reference, [{"role": "user", "content": "hi"}], 3, temperature=0)
    assert ok["done"].wait(60) and isinstance(ok["events"][-1], Done)
