"""``gemma4 convert`` / ``gemma4 synth`` through the CLI: reports, one-line errors, hub cache, interruption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlx_gemma4.cli.app import app
from typer.testing import CliRunner

from mlx_gemma4.loader import load
from tests.convert_helpers import hub_cache

runner = CliRunner()


def one_line_error(result, code: int = 2) -> str:
    """The CLI's error output, checked to be exactly one line (no traceback) with the exit status: 2 for bad
    input (source, options, output folder), 1 for runtime failures."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_convert_prints_the_report(tiny_ckpt, tmp_path):
    args = ["convert", str(tiny_ckpt.path), str(tmp_path / "q4"), "--bits", "4", "--recipe", "mixed"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # mixed keeps the 262144-row embedding (most of this tiny model) at 8 bits: above 5 bpw → warned
    for text in ("embedding / tied head", "4-bit g64", "8-bit g64", "bits/weight", "total", "warning"):
        assert text in result.stdout, text
    assert load(tmp_path / "q4", with_processor=False)[0] is not None


def _folder_without_config(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("hello")
    return tmp


def _folder_with_config(tmp: Path, config: dict) -> Path:
    (tmp / "config.json").write_text(json.dumps(config))
    return tmp


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such checkpoint folder"),
        ("no_config", "no config.json"),
        ("wrong_type", "model_type 'llama' is not a Gemma 4 unified checkpoint"),
        ("no_weights", "no *.safetensors weights"),
        ("missing_shard", "named by the index is missing"),
        ("corrupt", "not a readable safetensors file"),
        ("missing_tensor", "is missing tensor 'language_model.layers.5.mlp.down_proj.weight'"),
    ],
)
def test_bad_sources_give_one_readable_line(tiny_ckpt, tmp_path, case, expected):
    src = tmp_path / "src"
    src.mkdir()
    config = json.loads((tiny_ckpt.path / "config.json").read_text())
    if case == "missing":
        src = tmp_path / "does-not-exist"
    elif case == "no_config":
        _folder_without_config(src)
    elif case == "wrong_type":
        _folder_with_config(src, {**config, "model_type": "llama"})
        shutil.copy(tiny_ckpt.path / "model.safetensors", src)
    elif case == "no_weights":
        _folder_with_config(src, config)
    elif case == "missing_shard":
        _folder_with_config(src, config)
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-1.safetensors"}}))
    elif case == "corrupt":
        _folder_with_config(src, config)
        (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif case == "missing_tensor":
        from safetensors.numpy import load_file, save_file

        _folder_with_config(src, config)
        tensors = load_file(str(tiny_ckpt.path / "model.safetensors"))
        del tensors["model.language_model.layers.5.mlp.down_proj.weight"]
        save_file(tensors, str(src / "model.safetensors"))
    result = runner.invoke(app, ["convert", str(src), str(tmp_path / "out"), "--bits", "8"])
    assert expected in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--verbose", "convert", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "no such checkpoint folder" in result.stderr


def test_invalid_options_are_refused(tiny_ckpt, tmp_path):
    for args, text in ((["--bits", "3"], "--bits must be one of"), (["--group-size", "48"], "--group-size"),
                       (["--recipe", "fancy"], "--recipe"), (["--max-shard-size", "lots"], "not a size"),
                       (["--upload-repo", "no-slash"], "org/name")):
        result = runner.invoke(app, ["convert", str(tiny_ckpt.path), str(tmp_path / "out"), *args])
        assert text in one_line_error(result, code=2), args
    assert not (tmp_path / "out").exists()


def test_upload_offline_fails_clearly_and_keeps_the_folder(tiny_ckpt, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    result = runner.invoke(app, ["convert", str(tiny_ckpt.path), str(tmp_path / "out"), "--bits", "8",
                                 "--upload-repo", "someone/tiny-mlx"])
    line = one_line_error(result, 1)
    assert "upload to someone/tiny-mlx failed" in line and "kept at" in line
    assert (tmp_path / "out" / "config.json").is_file()


def _cli(args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    code = "from mlx_gemma4.cli.app import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_hub_id_from_the_offline_cache(tiny_ckpt, tmp_path):
    cache = hub_cache(tmp_path, tiny_ckpt.path, "test-org/tiny-gemma4")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    ok = _cli(["convert", "test-org/tiny-gemma4", str(tmp_path / "q8"), "--bits", "8"], env)
    missing = _cli(["convert", "test-org/not-there", str(tmp_path / "x"), "--bits", "8"], env)
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 1
    assert err.strip().count("\n") == 0 and "not in the local hub cache" in err
    model = load(tmp_path / "q8", with_processor=False)[0]
    assert model.language_model.embed_tokens.bits == 8


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_conversion_leaves_no_output(real_geometry_ckpt, tmp_path, sig):
    out = tmp_path / "out"
    proc = _cli(["convert", str(real_geometry_ckpt.path), str(out), "--bits", "16", "--max-shard-size", "20MB",
                 "--no-tokenizer"])
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.converting-*/*.safetensors")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    leftovers = list(tmp_path.glob(".out.*"))
    if sig == signal.SIGINT:
        assert leftovers == []  # cleaned up on the way out
    else:
        assert leftovers  # nothing could clean up after -9 …
        from mlx_gemma4.convert.convert import remove_stale_staging

        remove_stale_staging(out)  # … so the next conversion into OUT removes it
        assert not list(tmp_path.glob(".out.*"))


def test_synth_writes_a_loadable_checkpoint_of_the_asked_geometry(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "syn"), "--geometry", "tiny", "--layers", "3",
                                 "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "syn" / "config.json").read_text())
    assert config["text_config"]["per_layer_config"] == {"2": {"head_dim": 32, "num_key_value_heads": 1}}
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                 "generation_config.json", "model.safetensors.index.json"):
        assert (tmp_path / "syn" / name).is_file(), name
    model = load(tmp_path / "syn", with_processor=False)[0]
    logits = np.array(model(np.array([[2, 1000, 1001, 1002]])))
    assert logits.shape == (1, 4, 262144) and np.isfinite(logits).all()
    q = runner.invoke(app, ["convert", str(tmp_path / "syn"), str(tmp_path / "q4"), "--bits", "4"])
    assert q.exit_code == 0, q.output
    assert (tmp_path / "q4" / "tokenizer.json").is_file()


def test_synth_12b_geometry_shapes_without_allocating(tmp_path):
    from mlx_gemma4.convert.synth import geometry_config, hf_shapes

    shapes = hf_shapes(geometry_config("12b", None, "bfloat16"))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 11_959_730_224  # the official 12B parameter count
    assert shapes["model.language_model.layers.5.self_attn.k_proj.weight"] == (512, 3840)
    assert "model.language_model.layers.5.self_attn.v_proj.weight" not in shapes
    drafter = hf_shapes(geometry_config("12b-assistant", None, "bfloat16"))
    assert drafter["pre_projection.weight"] == (1024, 7680)
    assert drafter["model.layers.3.self_attn.q_proj.weight"] == (8192, 1024)
