"""HF → MLX conversion: round trips at 16/8/4 bits, parity, fidelity bounds, shards, atomic output, drafter."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_gemma4.convert.convert import ConvertOptions, convert
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from safetensors import safe_open

from mlx_gemma4.errors import ConversionError, ConversionInputError
from mlx_gemma4.loader import load, load_drafter
from tests.convert_helpers import kl_top1, make_mlx_vlm_style, write_assistant_checkpoint
from tests.reference import PromptBuilder, parity_cases, reference_logits

# Per-prompt bounds: the largest value measured on the tiny checkpoint (benchmarks/quant_fidelity.md has the
# means) with about 3× headroom. Top-1 is weak on a random model (its distributions are nearly flat, so the
# argmax flips on near-ties); KL carries the signal.
KL_BOUND = {8: 6e-4, 4: 0.015}
TOP1_BOUND = {8: 0.5, 4: 0.05}


@pytest.fixture(scope="module")
def converted(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint converted at 16 bits (float32 and bfloat16), 8 and 4 bits (uniform and mixed)."""
    root = tmp_path_factory.mktemp("converted")
    runs = {
        "16-f32": ConvertOptions(bits=16, dtype="float32"),
        "16-bf16": ConvertOptions(bits=16, dtype="bfloat16"),
        "8": ConvertOptions(bits=8),
        "4": ConvertOptions(bits=4),
        "4-mixed": ConvertOptions(bits=4, recipe="mixed"),
    }
    return {k: convert(tiny_ckpt.path, root / k, o) for k, o in runs.items()}


@pytest.fixture(scope="module")
def prompts(tiny_ckpt):
    cases = parity_cases(tiny_ckpt.ids, tiny_ckpt.config.text_config.sliding_window)
    return {k: cases[k] for k in ("text", "image_longer_than_window", "audio", "image_audio_text")}


@pytest.fixture(scope="module")
def float_logits(tiny_ckpt, prompts):
    model = load(tiny_ckpt.path)[0]
    return {k: np.array(model(**p.mlx_kwargs())) for k, p in prompts.items()}


def test_16bit_float32_reproduces_reference_logits(converted, tiny_ckpt, prompts):
    model = load(converted["16-f32"].out)[0]
    for name, prompt in prompts.items():
        ours = np.array(model(**prompt.mlx_kwargs()))
        assert np.abs(ours - reference_logits(tiny_ckpt, prompt)).max() <= 1e-3, name


def test_16bit_bfloat16_equals_loading_the_source_in_bfloat16(converted, tiny_ckpt, prompts):
    converted_model = load(converted["16-bf16"].out)[0]
    direct = load(tiny_ckpt.path, dtype=mx.bfloat16)[0]
    assert converted_model.language_model.embed_tokens.weight.dtype == mx.bfloat16
    prompt = prompts["image_audio_text"]
    a = np.array(converted_model(**prompt.mlx_kwargs()).astype(mx.float32))
    b = np.array(direct(**prompt.mlx_kwargs()).astype(mx.float32))
    assert np.abs(a - b).max() <= 1e-6


def test_quantized_outputs_stay_within_measured_bounds(converted, float_logits, prompts):
    scores = {}
    for run in ("8", "4", "4-mixed"):
        bits = int(run[0])
        model = load(converted[run].out, dtype=mx.bfloat16)[0]  # the checkpoint's own dtype (CPU default: f32)
        assert isinstance(model.language_model.embed_tokens, nn.QuantizedEmbedding)
        gate = model.language_model.layers[0].mlp.gate_proj
        assert isinstance(gate, nn.QuantizedLinear) and gate.bits == bits
        # norms, layer_scalar, the position table and the multimodal projections stay float
        assert isinstance(model.embed_vision.embedding_projection, nn.Linear)
        assert model.vision_embedder.pos_embedding.dtype == mx.bfloat16
        # float32 activations (the CPU default): MLX's CPU quantized matmul is ~7x slower with bf16 scales
        model = load(converted[run].out, dtype=mx.float32)[0]
        for name, prompt in prompts.items():
            kl, top1 = kl_top1(float_logits[name], np.array(model(**prompt.mlx_kwargs()).astype(mx.float32)))
            assert 0 < kl <= KL_BOUND[bits] and top1 >= TOP1_BOUND[bits], (run, name, kl, top1)
            scores[run, name] = kl
    mean = {run: np.mean([v for (r, _), v in scores.items() if r == run]) for run in ("8", "4", "4-mixed")}
    assert mean["8"] < mean["4-mixed"] < mean["4"]  # more bits help, and the mixed recipe measurably helps


def test_mixed_recipe_promotes_the_measured_sensitive_modules(converted, tiny_ckpt):
    mixed, uniform = converted["4-mixed"], converted["4"]
    block = mixed.quantization
    assert block["bits"] == 4 and block["group_size"] == 64
    assert block["language_model.embed_tokens"]["bits"] == 8
    assert block["language_model.layers.0.self_attn.v_proj"]["bits"] == 8
    assert "language_model.layers.0.mlp.down_proj" not in block
    assert mixed.total_bytes > uniform.total_bytes
    model = load(mixed.out)[0]
    assert model.language_model.embed_tokens.bits == 8
    assert model.language_model.layers[0].mlp.gate_proj.bits == 4


def test_bits_per_weight_are_true_sizes(converted):
    for result in converted.values():
        files = sorted(result.out.glob("*.safetensors"))
        data = sum(f.stat().st_size for f in files)
        assert result.total_bytes <= data  # files = data + small headers
        assert data - result.total_bytes < 64 * 1024 * len(files)
    emb = converted["4"].components["embedding / tied head"]
    assert emb.bits_per_weight == pytest.approx(4 + 2 * 16 / 64)  # 4 bits + bf16 scale and bias per 64
    assert 4.5 < converted["4"].bits_per_weight < 5 and not converted["4"].warnings
    assert converted["4-mixed"].bits_per_weight > 5 and "bits per weight" in converted["4-mixed"].warnings[0]


def test_index_and_shard_size_limit(tiny_ckpt, tmp_path):
    limit = 3_000_000
    result = convert(tiny_ckpt.path, tmp_path / "out", ConvertOptions(bits=4, max_shard_bytes=limit))
    index = json.loads((result.out / "model.safetensors.index.json").read_text())
    shards = sorted(result.out.glob("model-*.safetensors"))
    assert len(shards) == result.shards > 2
    seen = {}
    for f in shards:
        with safe_open(str(f), "numpy") as st:
            names = list(st.keys())
            sizes = [st.get_slice(k).get_shape() for k in names]
        seen.update({k: f.name for k in names})
        data = f.stat().st_size
        # a shard exceeds the limit only when it holds one tensor (with its scales/biases) larger than it
        modules = {k.rsplit(".", 1)[0] for k in names}
        assert data <= limit + 64 * 1024 or len(modules) == 1, (f.name, data, sizes)
    assert seen == index["weight_map"]
    assert index["metadata"]["total_size"] == result.total_bytes
    assert load(result.out)[0] is not None


def test_side_files_config_and_model_card(tiny_ckpt, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in tiny_ckpt.path.iterdir():
        (src / f.name).symlink_to(f)
    write_standin_processor(src)
    result = convert(src, tmp_path / "out", ConvertOptions(bits=8))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                 "processor_config.json", "README.md", "config.json"):
        assert (result.out / name).is_file(), name
    config = json.loads((result.out / "config.json").read_text())
    assert config["quantization"] == {"bits": 8, "group_size": 64, "mode": "affine"}
    assert config["model_type"] == "gemma4_unified"
    assert "8-bit affine" in (result.out / "README.md").read_text()


def test_existing_output_refused_unless_force(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConversionInputError, match="already exists"):
        convert(tiny_ckpt.path, out, ConvertOptions(bits=8))
    with pytest.raises(ConversionInputError, match="was not written by gemma4 convert/synth"):
        convert(tiny_ckpt.path, out, ConvertOptions(bits=8, force=True))  # --force: only over our own outputs
    assert (out / "keep.txt").is_file()
    shutil.rmtree(out)
    convert(tiny_ckpt.path, out, ConvertOptions(bits=16))
    convert(tiny_ckpt.path, out, ConvertOptions(bits=8, force=True))  # an earlier conversion: replaced
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    assert not list(tmp_path.glob(".out.*"))  # no staging, replaced folder or lock left behind


def test_failure_mid_conversion_leaves_no_output(tiny_ckpt, tmp_path, monkeypatch):
    import mlx_gemma4.convert.convert as conv

    calls = []

    def failing(writer, item, dtype):
        calls.append(item.name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(writer, item, dtype)

    original = conv.write_item
    monkeypatch.setattr(conv, "write_item", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(tiny_ckpt.path, tmp_path / "out", ConvertOptions(bits=4))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())


def test_drafter_converts(tmp_path):
    tensors = write_assistant_checkpoint(tmp_path / "assistant")
    result = convert(tmp_path / "assistant", tmp_path / "q8", ConvertOptions(bits=8, group_size=32))
    weights = {}
    for f in result.out.glob("*.safetensors"):
        weights.update(mx.load(str(f)))
    assert json.loads((result.out / "config.json").read_text())["model_type"] == "gemma4_unified_assistant"
    for name in ("embed_tokens", "layers.3.self_attn.q_proj", "layers.0.mlp.down_proj"):
        assert {f"{name}.weight", f"{name}.scales", f"{name}.biases"} <= set(weights)
    for name in ("pre_projection.weight", "post_projection.weight", "norm.weight", "layers.2.layer_scalar"):
        assert weights[name].dtype == mx.bfloat16, name  # kept float
    q = weights["layers.3.self_attn.q_proj.weight"]
    deq = mx.dequantize(q, weights["layers.3.self_attn.q_proj.scales"], weights["layers.3.self_attn.q_proj.biases"],
                        group_size=32, bits=8)
    src = tensors["model.layers.3.self_attn.q_proj.weight"]
    assert np.abs(np.array(deq.astype(mx.float32)) - src).max() < 0.02 * np.abs(src).max()
    drafter = load_drafter(result.out)  # the converted drafter loads, quantized where the files say so
    assert isinstance(drafter.layers[3].self_attn.q_proj, nn.QuantizedLinear) and drafter.embed_tokens.bits == 8
    assert isinstance(drafter.pre_projection, nn.Linear) and not isinstance(drafter.pre_projection, nn.QuantizedLinear)
    exact = convert(tmp_path / "assistant", tmp_path / "f32", ConvertOptions(bits=16, dtype="float32"))
    back = {}
    for f in exact.out.glob("*.safetensors"):
        back.update({k: np.array(v) for k, v in mx.load(str(f)).items()})
    assert set(back) == {k.removeprefix("model.") for k in tensors}
    assert all(np.array_equal(back[k.removeprefix("model.")], v) for k, v in tensors.items())


def test_drafter_with_a_wrong_shape_is_refused(tmp_path):
    tensors = write_assistant_checkpoint(tmp_path / "a")
    tensors["pre_projection.weight"] = tensors["pre_projection.weight"][:, :10].copy()
    from safetensors.numpy import save_file

    save_file(tensors, str(tmp_path / "a" / "model.safetensors"))
    with pytest.raises(ConversionError, match="pre_projection.weight' has shape"):
        convert(tmp_path / "a", tmp_path / "out", ConvertOptions(bits=8, group_size=32))


def test_mlx_vlm_style_folder_loads(tiny_ckpt, tmp_path, float_logits, prompts):
    override = {"language_model.model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 64}}
    make_mlx_vlm_style(tiny_ckpt.path, tmp_path / "vlm", bits=4, group_size=64, overrides=override)
    model = load(tmp_path / "vlm")[0]
    lm = model.language_model
    assert isinstance(model.vision_embedder.patch_dense, nn.QuantizedLinear)  # mlx-vlm quantizes it (with bias)
    assert lm.layers[0].mlp.down_proj.bits == 8 and lm.layers[1].mlp.down_proj.bits == 4
    model = load(tmp_path / "vlm", dtype=mx.float32)[0]  # float32 activations: faster on the CPU backend
    for name, prompt in prompts.items():
        kl, top1 = kl_top1(float_logits[name], np.array(model(**prompt.mlx_kwargs()).astype(mx.float32)))
        assert kl <= KL_BOUND[4] and top1 >= TOP1_BOUND[4], (name, kl, top1)


def test_real_geometry_4bit_round_trip(real_geometry_ckpt, tmp_path):
    ck = real_geometry_ckpt
    result = convert(ck.path, tmp_path / "q4", ConvertOptions(bits=4, no_tokenizer=True))
    assert 4.4 < result.components["MLP linears"].bits_per_weight < 4.6
    model = load(result.out, dtype=mx.float32)[0]  # float32 activations: faster on the CPU backend
    prompt = PromptBuilder(ck.ids, seed=3).text(4).image(3, 2).text(3).audio(2000).text(2).build()
    kl, top1 = kl_top1(reference_logits(ck, prompt), np.array(model(**prompt.mlx_kwargs()).astype(mx.float32)))
    assert kl < 0.1 and top1 >= 0.6, (kl, top1)
