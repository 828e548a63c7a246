"""``gemma4 serve`` under load: generated tokens/s across clients and time to first token (p50/p95).

Run from the repository root (starts its own server on a free loopback port):
    python -m benchmarks.serve_bench --model /tmp/g4-tiny [--clients 1 4 16] [--requests 2] [--max-tokens 32]
    python -m benchmarks.serve_bench --url http://127.0.0.1:8081 --model-name M …   # a server already running
                                                                                       # (mlx-vlm's, for a comparison)
Each level runs ``clients`` concurrent streaming clients, each sending ``requests`` requests one after
another (distinct prompts, so the prompt cache does not serve them). TTFT is measured at the client:
request sent → first streamed chunk with text. Throughput = completion tokens of all requests / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server_helpers import ServerProcess  # noqa: E402


@dataclass(frozen=True)
class Ask:
    """What every request of a run asks for."""

    max_tokens: int
    temperature: float = 0.0
    model: str | None = None  # the request's model field (some servers need it)
    raw: bool = False  # /v1/completions with the raw prompt instead of a chat


async def _one(client: httpx.AsyncClient, base: str, prompt: str, ask: Ask) -> tuple[float, float, int]:
    """(TTFT, total seconds, completion tokens) of one streamed request (seeded: reproducible when sampled)."""
    body = {"max_tokens": ask.max_tokens, "temperature": ask.temperature, "seed": len(prompt), "stream": True,
            "stream_options": {"include_usage": True}, **({"model": ask.model} if ask.model else {})}
    if ask.raw:
        body["prompt"], path = prompt, "completions"
    else:
        body["messages"], path = [{"role": "user", "content": prompt}], "chat/completions"
    start = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", f"{base}/v1/{path}", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choice = chunk["choices"][0] if chunk["choices"] else {}
            text = choice.get("text") if ask.raw else choice.get("delta", {}).get("content")
            if ttft is None and text:
                ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return (ttft if ttft is not None else total), total, tokens


async def _level(base: str, clients: int, requests: int, words: int, tag: str, ask: Ask) -> dict:
    """One concurrency level → its figures."""
    async def client_loop(c: int, http: httpx.AsyncClient) -> list:
        out = []
        for r in range(requests):
            prompt = f"{tag} client {c} request {r} : " + "describe the world in detail " * (words // 5)
            out.append(await _one(http, base, prompt.strip(), ask))
        return out

    limits = httpx.Limits(max_connections=clients + 4)
    # No read timeout: on a slow CPU a queued request's first byte may wait for many other prefills.
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as http:
        start = time.perf_counter()
        results = [x for xs in await asyncio.gather(*(client_loop(c, http) for c in range(clients))) for x in xs]
        wall = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    return {"clients": clients, "requests": len(results), "wall_s": wall, "tokens": tokens,
            "tok_per_s": tokens / wall, "ttft_p50_s": statistics.median(ttfts),
            "ttft_p95_s": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]}


def main() -> None:
    """Start a server, run the levels, print a markdown table and the JSON records."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint folder (e.g. made with gemma4 synth): start gemma4 serve on it")
    ap.add_argument("--url", help="instead: the base URL of a server already running (e.g. mlx-vlm's)")
    ap.add_argument("--model-name", help="the request's model field (some servers need it)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--max-concurrency", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--raw", action="store_true",
                    help="/v1/completions with the raw prompt: a random checkpoint with few layers repeats its last "
                         "input token, and a chat prompt ends with <channel|> (never shown), so no text and no TTFT")
    args = ap.parse_args()
    if (args.model is None) == (args.url is None):
        ap.error("give either --model (start our server) or --url (measure a running one)")
    srv = None
    if args.model:
        srv = ServerProcess(Path(args.model), "--max-concurrency", str(args.max_concurrency), "--prompt-cache-mb", "0")
    base = args.url.rstrip('/') if args.url else srv.base
    try:
        if srv:
            srv.wait_ready(600)
        ask = Ask(args.max_tokens, args.temperature, args.model_name, args.raw)
        asyncio.run(_level(base, 1, 1, 10, "warm-up", Ask(4, args.temperature, args.model_name, args.raw)))
        rows = []
        for c in args.clients:  # each level's record as soon as it is measured (a long run may be cut short)
            rows.append(asyncio.run(_level(base, c, args.requests, args.prompt_words, f"level {c}", ask)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if srv:
            srv.stop()
    print(f"{args.model or args.url}; {args.requests} request(s) per client, max_tokens {args.max_tokens}, "
          f"temperature {args.temperature}{', raw completions' if args.raw else ''}")
    print("| clients | requests | generated tok/s | x 1 client | TTFT p50 (s) | TTFT p95 (s) | wall (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    single = rows[0]["tok_per_s"]
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['tok_per_s']:.1f} | {r['tok_per_s'] / single:.2f} | "
              f"{r['ttft_p50_s']:.3f} | {r['ttft_p95_s']:.3f} | {r['wall_s']:.2f} |")


if __name__ == "__main__":
    main()
