"""``gemma4 serve`` as a real process on a loopback port, driven with the official ``openai`` client.

One server for the module (a tiny random checkpoint with a small vocabulary whose tokenizer names every
id, so that outputs are non-empty text). Greedy answers are compared with ``mlx_gemma4.generate`` in this process.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from mlx_gemma4 import generate, load
from tests.server_helpers import ServerProcess, small_vocab_checkpoint
from tests.video_clips import write_clip

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return small_vocab_checkpoint(tmp_path_factory.mktemp("serve") / "tiny-fv")


@pytest.fixture(scope="module")
def server(ckpt, tmp_path_factory):
    srv = ServerProcess(ckpt, "--allow-local-files", str(EXAMPLES), "--context-length", "4096",
                        "--max-body-mb", "1", "--max-concurrency", "8", "--default-max-tokens", "16", api_key=KEY,
                        log=tmp_path_factory.mktemp("serve-log") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def reference(ckpt):
    return load(ckpt)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=KEY, max_retries=0, timeout=120)


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _chat(client, messages, **kw):
    return client.chat.completions.create(model="tiny-fv", messages=messages, extra_body={"return_token_ids": True},
                                          **kw)


def _ids(resp) -> list[int]:
    return resp.choices[0].model_extra["token_ids"]


def test_text_chat_equals_generate(client, reference):
    messages = [{"role": "system", "content": "You are terse ."},
                {"role": "user", "content": "Hello world , what is this ?"}]
    resp = _chat(client, messages, max_tokens=12, temperature=0)
    expected = generate(*reference, messages, temperature=0, max_tokens=12)
    assert _ids(resp) == expected.token_ids and resp.choices[0].message.content == expected.text
    assert expected.text and resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == len(expected.token_ids)


def test_image_data_url_and_local_file(client, reference):
    chart = EXAMPLES / "chart.png"
    ours = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this ?"}]}]
    expected = generate(*reference, ours, images=[str(chart)], temperature=0, max_tokens=8)
    for url in (_data_url(chart, "image/png"), chart.as_uri()):
        resp = _chat(client, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": "what is this ?"}]}],
                     max_tokens=8, temperature=0)
        assert _ids(resp) == expected.token_ids and resp.choices[0].message.content == expected.text
    assert resp.usage.prompt_tokens > 100  # the image's soft tokens are in the prompt


def test_audio_input_audio(client, reference):
    speech = EXAMPLES / "speech.ogg"
    ours = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "hello"}]}]
    expected = generate(*reference, ours, audio=[str(speech)], temperature=0, max_tokens=8)
    audio = {"data": base64.b64encode(speech.read_bytes()).decode(), "format": "ogg"}
    resp = _chat(client, [{"role": "user", "content": [{"type": "input_audio", "input_audio": audio},
                                                      {"type": "text", "text": "hello"}]}],
                 max_tokens=8, temperature=0)
    assert _ids(resp) == expected.token_ids and resp.choices[0].message.content == expected.text


def test_video_url(client, reference, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=20, fps=10)
    ours = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "what happens ?"}]}]
    expected = generate(*reference, ours, videos=[str(clip)], temperature=0, max_tokens=6)
    video = {"type": "video_url", "video_url": {"url": _data_url(clip, "video/mp4")}}
    resp = _chat(client, [{"role": "user", "content": [video, {"type": "text", "text": "what happens ?"}]}],
                 max_tokens=6, temperature=0)
    assert _ids(resp) == expected.token_ids and resp.choices[0].message.content == expected.text
    assert resp.usage.prompt_tokens == expected.stats.prompt_tokens


def test_streaming_with_usage_matches_whole(client):
    messages = [{"role": "user", "content": "tell me about the world"}]
    whole = _chat(client, messages, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny-fv", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_thinking_on(client, reference):
    messages = [{"role": "user", "content": "what is this ?"}]
    off = _chat(client, messages, max_tokens=8, temperature=0)
    on = _chat(client, messages, max_tokens=8, temperature=0, reasoning_effort="high")
    expected = generate(*reference, messages, temperature=0, max_tokens=8, thinking=True)
    assert _ids(on) == expected.token_ids
    assert on.choices[0].message.content == expected.text and on.choices[0].message.content
    assert (on.choices[0].message.model_extra.get("reasoning_content") or "") == expected.thinking
    assert on.usage.prompt_tokens > off.usage.prompt_tokens  # the template's thinking switch is in the prompt


def test_stop_string(client):
    messages = [{"role": "user", "content": "count with me"}]
    full = _chat(client, messages, max_tokens=10, temperature=0).choices[0].message.content
    assert len(full) > 6
    stop = full[len(full) // 2 :][:3]
    resp = _chat(client, messages, max_tokens=10, temperature=0, stop=[stop])
    assert resp.choices[0].message.content == full[: full.find(stop)]
    assert resp.choices[0].finish_reason == "stop"


def test_seed_reproducible(client):
    messages = [{"role": "user", "content": "say something"}]
    a, b, c = (_chat(client, messages, max_tokens=10, temperature=1.0, seed=s) for s in (7, 7, 8))
    assert a.choices[0].message.content == b.choices[0].message.content
    assert _ids(a) != _ids(c)  # a different seed draws differently (10 draws from a near-uniform random model)


def test_completions_plain_text(client, reference):
    model, processor = reference
    resp = client.completions.create(model="tiny-fv", prompt="Hello world", max_tokens=6, temperature=0)
    ids = processor("Hello world").input_ids[0].tolist()
    assert resp.choices[0].text == generate(model, processor, ids, temperature=0, max_tokens=6).text


def test_follow_up_turn_reuses_the_prompt_cache(client, reference):
    first = [{"role": "system", "content": "You are a helpful assistant . " * 4}, {"role": "user", "content": "hi"}]
    r1 = _chat(client, first, max_tokens=6, temperature=0)
    second = [*first, {"role": "assistant", "content": r1.choices[0].message.content},
              {"role": "user", "content": "and now ?"}]
    r2 = _chat(client, second, max_tokens=6, temperature=0)
    # Only the new turns are prefilled: everything before the first turn's generation prompt is reused.
    history = reference[1](first, add_generation_prompt=False).input_ids.shape[1]
    assert r2.usage.prompt_tokens_details.cached_tokens == history
    expected = generate(*reference, second, temperature=0, max_tokens=6)
    assert _ids(r2) == expected.token_ids and r2.choices[0].message.content == expected.text


def _stream_text(client, prompt: str, n: int) -> str:
    chunks = client.chat.completions.create(model="tiny-fv", messages=[{"role": "user", "content": prompt}],
                                            max_tokens=n, temperature=0, stream=True)
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def _together(client, prompts: list[str], n: int) -> tuple[list[str], float]:
    out: dict[int, str] = {}

    def run(i):
        out[i] = _stream_text(client, prompts[i], n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [out[i] for i in range(len(prompts))], time.perf_counter() - t


def test_eight_simultaneous_streams(client):
    """8 streams at once give each the text it gets alone, in less than 8x one request's time. The CPU
    is shared with other jobs, so the timing takes the better of two rounds (each round: every prompt
    alone, then all together); the first pass also warms the prompt cache for both alike."""
    prompts = [f"question {i} : " + "what is the world " * (i + 1) for i in range(8)]
    for p in prompts:
        _stream_text(client, p, 16)
    ratios = []
    for _ in range(2):
        alone, times = [], []
        for p in prompts:
            t = time.perf_counter()
            alone.append(_stream_text(client, p, 16))
            times.append(time.perf_counter() - t)
        together, wall = _together(client, prompts, 16)
        assert together == alone
        ratios.append(wall / (sum(times) / len(times)))
    print(f"8 simultaneous streams: {min(ratios):.2f}x one request alone (rounds: {ratios})")
    assert min(ratios) < 8


BAD = [
    ("corrupt image", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()}}]}]}, 400),
    ("bad base64", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@notbase64"}}]}]}, 400),
    ("http url", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, 400),
    ("file outside the allowed dir", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/hostname"}}]}]}, 400),
    ("corrupt audio", {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": base64.b64encode(b"noise" * 10).decode(), "format": "wav"}}]}]}, 400),
    ("unknown audio format", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "xyz"}}]}]}, 400),
    ("n=2", {"n": 2, "messages": [{"role": "user", "content": "hi"}]}, 400),
    ("response_format", {"response_format": {"type": "yaml"}, "messages": [{"role": "user", "content": "hi"}]}, 400),
    ("temperature", {"temperature": -1, "messages": [{"role": "user", "content": "hi"}]}, 400),
    ("reasoning_effort", {"reasoning_effort": "extreme", "messages": [{"role": "user", "content": "hi"}]}, 400),
    ("role", {"messages": [{"role": "tool", "content": "hi"}]}, 400),
    ("no messages", {"messages": []}, 400),
    ("prompt longer than the context", {"messages": [{"role": "user", "content": "world " * 4500}]}, 400),
    ("unknown model", {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404),
]


@pytest.mark.parametrize("name,body,status", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_an_error_object(server, name, body, status):
    r = httpx.post(f"{server.base}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text


def test_raw_body_errors_and_health_after(server):
    r = httpx.post(f"{server.base}/v1/chat/completions", content=b"{not json", headers=AUTH, timeout=60)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    big = {"messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    r = httpx.post(f"{server.base}/v1/chat/completions", json=big, headers=AUTH, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{server.base}/health", timeout=10).json()["status"] == "ok"


def test_api_key(server):
    assert httpx.get(f"{server.base}/v1/models", timeout=10).status_code == 401
    wrong = httpx.get(f"{server.base}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.get(f"{server.base}/v1/models", headers=AUTH, timeout=10)
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "tiny-fv"


def test_disconnect_frees_the_slot(server, client):
    body = {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break
    deadline = time.monotonic() + 5
    while httpx.get(f"{server.base}/health", timeout=10).json()["requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{server.base}/health", timeout=10).json()["requests"] == 0
    assert _chat(client, [{"role": "user", "content": "hi"}], max_tokens=2, temperature=0).choices[0].message.content


def test_readme_client_example(server, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```py\n(import base64, openai.*?)```", readme, flags=re.DOTALL).group(1)
    code = code.replace('"http://127.0.0.1:8080/v1"', repr(f"{server.base}/v1")).replace('"none"', repr(KEY))
    code = code.replace('"photo.jpg"', repr(str(EXAMPLES / "scene.jpg")))
    exec(compile(code, "README.md server snippet", "exec"), {"__name__": "readme_snippet"})
    assert capsys.readouterr().out.strip()


def test_shared_system_prompt_is_prefilled_once(client, reference):
    system = {"role": "system", "content": "You answer questions about the world . " * 6}
    _chat(client, [system, {"role": "user", "content": "first question"}], max_tokens=3, temperature=0)
    messages = [system, {"role": "user", "content": "a different question"}]
    resp = _chat(client, messages, max_tokens=6, temperature=0)
    shared = reference[1]([system], add_generation_prompt=False).input_ids.shape[1]
    assert resp.usage.prompt_tokens_details.cached_tokens == shared
    expected = generate(*reference, messages, temperature=0, max_tokens=6)
    assert _ids(resp) == expected.token_ids
