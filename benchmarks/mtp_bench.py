"""MTP speculative decoding at the real drafter geometry on a 12B-size target with few layers.

    python -m benchmarks.mtp_bench --target TARGET --drafter DRAFTER [--gen-tokens 24] [--k 4] [--rounds 2]

TARGET: a 12B-geometry checkpoint with a few layers (``gemma4 synth --geometry 12b --layers 2``, converted);
DRAFTER: ``gemma4 synth --geometry 12b-assistant`` (4 layers, hidden 1024, its own 262,144-row head).
Random weights never agree with the target, so the drafter is forced to agree: it runs its real forward
passes (their cost is paid and read back), then proposes the target's own greedy continuation. That is the
mechanism's best case at the real drafter cost: every draft accepted. Each round runs plain decoding,
``speculative="on"`` and ``speculative="auto"`` in turn (same prompt, greedy, identical tokens checked).

The per-layer cost of one target forward at 1 and at k + 1 tokens (a sliding and a full layer, timed
alone with a filled cache) extends the result to the 48 layers of the real model (40 sliding, 8 full).
Writes ``results/mtp.json`` and ``results/mtp.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_gemma4 import generate, load
from mlx_gemma4.loader import load_drafter
from mlx_gemma4.model.cache import make_cache

HERE = Path(__file__).resolve().parent
REAL_LAYERS = {"sliding_attention": 40, "full_attention": 8}


class ForcedRealDrafter:
    """The real drafter's forward passes (evaluated, so their cost is paid), then the known continuation."""

    def __init__(self, drafter, sequence: list[int]):
        self.drafter, self.sequence = drafter, sequence

    def draft(self, target, token, hidden, shared_kv: dict, position: int, k: int) -> mx.array:
        mx.eval(self.drafter.draft(target, token, hidden, shared_kv, position, k))
        out = [self.sequence[i] if i < len(self.sequence) else 0 for i in range(position + 1, position + 1 + k)]
        return mx.array([out], dtype=mx.int32)


def timed(fn, n: int = 3) -> float:
    """Median wall seconds of ``fn`` (which evaluates its own result)."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_costs(model, drafter, k: int, context: int = 64) -> dict:
    """Seconds of: one decoder layer of each type at 1 and k + 1 tokens, the head at 1 and k + 1 tokens, and
    one drafter step (over the K/V of a ``context``-token prompt).

    The layers are timed without a cache: their cost is the projections and the MLP; attention over a short
    context adds little, and a timed call then leaves no state behind.
    """
    lm = model.language_model
    out = {}
    for t in (1, k + 1):
        ids = np.full((1, t), 1000, np.int32)
        x = lm.embed(mx.array(ids))
        ctx = model.attention_context(mx.array(ids), None, None, ids)
        for layer, kind in zip(lm.layers, lm.config.layer_types, strict=True):
            if f"{kind}_{t}" not in out:
                out[f"{kind}_{t}"] = timed(lambda layer=layer, x=x, ctx=ctx: mx.eval(layer(x, ctx, None)))
        out[f"head_{t}"] = timed(lambda x=x: mx.eval(lm.logits(lm.norm(x))))
    from mlx_gemma4.generation.speculative import shared_kv

    cache = make_cache(model)
    mx.eval(model(np.full((1, context), 1000, np.int32), cache=cache, logits_to_keep=1))
    kv = shared_kv(model, cache)
    tok = mx.array([1000], dtype=mx.int32)
    h = mx.zeros((1, lm.config.hidden_size), dtype=lm.embed_tokens.weight.dtype)
    out["draft_token"] = timed(lambda: mx.eval(drafter.draft(model, tok, h, kv, context, 1)))
    return out


def extrapolate(costs: dict, k: int, accepted_per_round: float) -> dict:
    """Seconds per token at 48 layers: plain = 1-token forward; speculative = k drafter steps + a (k + 1)-token
    verify per round, emitting ``accepted_per_round`` + 1 tokens."""
    def forward(t: int) -> float:
        return costs[f"head_{t}"] + sum(n * costs[f"{kind}_{t}"] for kind, n in REAL_LAYERS.items())

    plain = forward(1)
    spec = (k * costs["draft_token"] + forward(k + 1)) / (accepted_per_round + 1)
    return {"plain_s_per_token": plain, "spec_s_per_token": spec, "speedup": plain / spec,
            "verify_cost_in_plain_steps": forward(k + 1) / plain}


def run(args) -> dict:
    model, _ = load(args.target)
    drafter = load_drafter(args.drafter, model)
    mx.eval(model.parameters(), drafter.parameters())
    rng = np.random.default_rng(0)
    prompt = [2, *rng.integers(1000, 200000, args.prompt_tokens - 1).tolist()]
    n, k = args.gen_tokens, args.k
    plain0 = generate(model, None, prompt, max_tokens=n, temperature=0)
    seq = prompt + plain0.token_ids
    records = []
    for r in range(args.rounds):
        for mode in ("off", "on", "auto"):
            draft = None if mode == "off" else ForcedRealDrafter(drafter, seq)
            res = generate(model, None, prompt, max_tokens=n, temperature=0, draft_model=draft,
                           num_draft_tokens=k, speculative="on" if mode == "off" else mode)
            if res.token_ids != plain0.token_ids:
                raise RuntimeError(f"speculative={mode} changed the greedy tokens")
            s = res.stats
            records.append({"round": r, "mode": mode, "decode_tps": s.generation_tps, "ttft_s": s.time_to_first_token_s,
                            "tokens": s.generation_tokens, "target_steps": s.target_steps,
                            "tokens_per_step": s.tokens_per_step if mode != "off" else 1.0,
                            "draft_tokens": s.draft_tokens, "accepted_tokens": s.accepted_tokens})
            print(f"round {r} {mode}: {s.generation_tps:.3f} tok/s, {records[-1]['tokens_per_step']:.2f} tokens/step, "
                  f"{s.draft_tokens} drafted", flush=True)
    costs = forward_costs(model, drafter, k)
    med = {m: {f: statistics.median(x[f] for x in records if x["mode"] == m)
               for f in ("decode_tps", "tokens_per_step", "draft_tokens", "target_steps")}
           for m in ("off", "on", "auto")}
    on = [x for x in records if x["mode"] == "on"]
    accepted = statistics.median(x["accepted_tokens"] / max(1, x["draft_tokens"] // k) for x in on)
    return {"target": args.target, "drafter": args.drafter, "layers": model.config.text_config.num_hidden_layers,
            "k": k, "gen_tokens": n, "prompt_tokens": len(prompt), "records": records, "medians": med,
            "speedup_on": med["on"]["decode_tps"] / med["off"]["decode_tps"],
            "speedup_auto": med["auto"]["decode_tps"] / med["off"]["decode_tps"],
            "forward_costs_s": costs, "extrapolated_48": extrapolate(costs, k, accepted),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "mlx": mx.__version__},
            "command": " ".join([sys.executable, "-m", "benchmarks.mtp_bench", *sys.argv[1:]])}


def markdown(d: dict) -> str:
    m, e, c = d["medians"], d["extrapolated_48"], d["forward_costs_s"]
    k1 = d["k"] + 1
    auto_spec_rounds = m["auto"]["draft_tokens"] / d["k"]
    lines = [
        "# MTP speculative decoding, real drafter geometry (generated by `python -m benchmarks.mtp_bench`)", "",
        f"{d['machine']['platform']}, {d['machine']['cpus']} CPUs, MLX {d['machine']['mlx']} CPU backend, "
        f"{d['machine']['date']}, load average {d['machine']['load_average'][0]:.1f}. Target: `{d['target']}` "
        f"({d['layers']} layers); drafter: `{d['drafter']}`, random weights forced to agree (its forward passes "
        "run and are read back, then it proposes the target's greedy continuation). "
        f"k = {d['k']}, {d['gen_tokens']} generated tokens after "
        f"{d['prompt_tokens']} prompt tokens; medians over {len({r['round'] for r in d['records']})} alternating "
        "rounds; tokens identical to plain greedy decoding in every run.", "",
        "| mode | decode tok/s | tokens per target step | target steps | drafted tokens |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {name} | {m[mode]['decode_tps']:.3f} | {m[mode]['tokens_per_step']:.2f} | "
          f"{m[mode]['target_steps']:.0f} | {m[mode]['draft_tokens']:.0f} |"
          for name, mode in (("plain", "off"), ('speculative="on"', "on"), ('speculative="auto"', "auto"))], "",
        f"Speedup: on {d['speedup_on']:.2f}×, auto {d['speedup_auto']:.2f}× (auto drafted in about "
        f"{auto_spec_rounds:.0f} of its {m['auto']['target_steps']:.0f} target steps).", "",
        "## Extrapolated to 48 layers (40 sliding, 8 full)", "",
        "Measured forward costs, seconds (one layer timed alone, without a cache; head = final norm + tied "
        "head + soft-cap; drafter step over the K/V of 64 prompt tokens):", "",
        "| piece | 1 token | k + 1 tokens |", "| --- | --- | --- |",
        *[f"| {p} | {c[f'{p}_1']:.4f} | {c[f'{p}_{k1}']:.4f} |"
          for p in ("sliding_attention", "full_attention", "head")],
        f"| drafter step (1 token) | {c['draft_token']:.4f} | |", "",
        f"At 48 layers: plain {e['plain_s_per_token']:.2f} s/token; speculative with every draft accepted "
        f"{e['spec_s_per_token']:.2f} s/token → speedup {e['speedup']:.2f}×; one (k + 1)-token verify costs "
        f"{e['verify_cost_in_plain_steps']:.2f} plain steps.", "",
        "## Command", "", "```", d["command"], "```", "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--drafter", required=True)
    p.add_argument("--gen-tokens", type=int, default=24)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    d = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mtp.json").write_text(json.dumps(d, indent=1) + "\n")
    (args.out / "mtp.md").write_text(markdown(d))
    print(markdown(d))


if __name__ == "__main__":
    main()
