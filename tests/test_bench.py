"""``gemma4 bench``: the table, JSON lines with the documented fields, the bandwidth probe, bad flags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_gemma4.bench import measure_bandwidth
from mlx_gemma4.loader import on_cpu

ROOT = Path(__file__).resolve().parents[1]
GEMMA4 = [sys.executable, "-m", "mlx_gemma4.cli.app"]
QUICK = ["--synthetic", "tiny", "--gen-tokens", "4", "--trials", "1", "--warmup", "0", "--prompt-tokens", "24"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private synthetic-checkpoint cache (built by the first run, reused by the next)."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}


def bench(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GEMMA4, "bench", *args], capture_output=True, text=True, env=env, timeout=600)


def documented_fields() -> set[str]:
    """Field names listed in the README's JSON-lines table: the first column's names in backticks, where
    `` `x_median` / `_min` / `_max` `` stands for x_median, x_min and x_max."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### `gemma4 bench --json` fields"):]
    section = section[: section.index("\n#", 1)]
    fields = set()
    for cell in re.findall(r"^\| (`[^|]+)\|", section, re.MULTILINE):
        names = re.findall(r"`([a-z0-9_]+)`", cell)
        base = names[0].removesuffix("_median")
        fields.update(base + n if n.startswith("_") else n for n in names)
    return fields


def test_synthetic_tiny_prints_the_table(env):
    run = bench(env, *QUICK)
    assert run.returncode == 0, run.stderr
    assert "synthetic tiny" in run.stdout and "dtype" in run.stdout and "quantization 4-bit" in run.stdout
    for row in ("time to first token", "prefill tok/s", "decode tok/s", "peak memory", "KV cache", "activations",
                "MB read per token", "share of bandwidth"):
        assert row in run.stdout
    assert (Path(env["XDG_CACHE_HOME"]) / "mlx-gemma4/synthetic/tiny-all-4/config.json").is_file()


def test_json_lines_one_object_per_kind_with_documented_fields(env):
    run = bench(env, *QUICK, "--json", "--image", "--image-tokens", "70", "--audio", "1", "--video", "2")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["text", "image", "audio", "video"]
    fields = documented_fields()
    for r in records:
        assert set(r) == fields, set(r) ^ fields
    text, image, audio, video = records
    assert image["prompt_tokens"] > text["prompt_tokens"] + 60 and audio["prompt_tokens"] > text["prompt_tokens"] + 20
    assert video["prompt_tokens"] > text["prompt_tokens"] + 60
    for r in records:
        assert r["available"] and r["trials"] == 1 and r["generated_tokens"] == 4  # stop tokens are ruled out
        assert r["ttft_s_median"] > 0 and r["decode_tps_median"] > 0 and r["prefill_tps_min"] > 0
        assert r["peak_memory_bytes"] >= r["weights_bytes"] + r["kv_cache_bytes"]
        assert r["activations_bytes"] == r["peak_memory_bytes"] - r["weights_bytes"] - r["kv_cache_bytes"]
        assert r["weights_bytes"] / 2 < r["bytes_per_token"] <= r["weights_bytes"] + r["kv_cache_bytes"]  # decoder only
        assert r["bandwidth_share"] > 0
        assert r["dtype"] == ("float32" if on_cpu() else "bfloat16") and r["quantization"].startswith("4-bit")


def test_bandwidth_probe_is_positive():
    assert measure_bandwidth(nbytes=16 << 20, repeats=2) > 0


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--synthetic", "tiny", "--trials", "0"], "--trials"),
        (["--model", "x", "--synthetic", "tiny", "--image-tokens", "100"], "--model"),
    ],
)
def test_bad_flags_exit_2_with_one_line(env, args, names):
    run = bench(env, *args)
    assert run.returncode == 2
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1 and names in run.stderr


def test_a_kind_the_checkpoint_cannot_take_is_reported_unavailable():
    from types import SimpleNamespace

    from mlx_gemma4.bench import BenchConfig, measure_kind

    model = SimpleNamespace(config=SimpleNamespace(vision_config=None, audio_config=object()))
    cfg = BenchConfig(synthetic="tiny", image=True, trials=1, warmup=0)
    m = measure_kind(model, None, "image", "text", {}, cfg, None)
    assert not m.available and "vision" in m.note
    header = {"batch": 1}
    rec = m.record(header, weights_bytes=10, decode_bytes=8, bandwidth_gbps=1.0)
    assert rec["decode_tps_median"] is None and rec["bandwidth_share"] is None and rec["kv_cache_bytes"] is None


def test_two_benches_building_one_synthetic_checkpoint_both_succeed(tmp_path):
    """The first use of --synthetic builds the checkpoint; a second process meanwhile waits for it (before:
    its conversion of the shared source folder failed with "another conversion ... is running")."""
    code = ("import sys; from pathlib import Path; from mlx_gemma4.bench import synthetic_checkpoint; "
            "print(synthetic_checkpoint('tiny', 1, 16, Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert {r[1] for r in results} == {str(tmp_path / "tiny-1-16")}
    assert (tmp_path / "tiny-1-16" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tiny-1-16"]
