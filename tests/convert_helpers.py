"""Helpers for the converter tests and benchmarks: fidelity metrics, a drafter fixture, an mlx-vlm-style folder.

Run as a script to build an mlx-vlm-style folder from an HF checkpoint:
``python -m tests.convert_helpers mlx-vlm SRC OUT [--bits 4] [--group-size 64]``.

mlx-vlm naming, as read in mlx-vlm 0.7.10's source (wheel unpacked, never imported here):
``models/gemma4_unified/gemma4_unified.py: Model.sanitize`` strips ``model.`` and moves
``language_model.*`` to ``language_model.model.*`` (vision_embedder / embed_vision / embed_audio keep
their names; ``lm_head`` and rotary buffers dropped); ``quant_utils.quantize_model`` quantizes every
module with ``to_quantized`` whose input width divides the group size — Linear and Embedding alike,
vision/audio projections and the biased ``patch_dense`` included (``skip_multimodal_module`` matches
only "vision_model"/"audio_tower"-style names, and ``vision_embedder`` only when ``skip_vision``) —
and writes ``quantization`` and ``quantization_config`` = ``{"group_size", "bits", "mode": "affine"}``
plus a ``"<mlx-vlm module path>": {...}`` entry for modules quantized differently. Weights go into
``model.safetensors`` (metadata ``format: mlx``) with an index.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from safetensors.numpy import save_file

from mlx_gemma4.loader import weight_files
from mlx_gemma4.presets import BACKBONE_WIDTH, text_preset


def hub_cache(tmp_path: Path, src: Path, repo: str) -> Path:
    """An HF hub cache holding ``src`` as the snapshot of ``repo`` (the layout huggingface-hub reads offline)."""
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in src.iterdir():
        (snap / f.name).symlink_to(f)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return cache


def kl_top1(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Mean KL(P_ref ‖ P_test) of next-token distributions and top-1 agreement, over all positions."""
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    out = test.reshape(-1, test.shape[-1]).astype(np.float64)
    lp = ref - ref.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = out - out.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    kl = (np.exp(lp) * (lp - lq)).sum(-1).mean()
    top1 = (ref.argmax(-1) == out.argmax(-1)).mean()
    return float(kl), float(top1)


# -- an MTP drafter checkpoint written by hand (transformers 5.23 cannot build one) ------------------------

_A = text_preset("tiny-assistant")
TINY_ASSISTANT = dict(hidden=_A["hidden_size"], intermediate=_A["intermediate_size"], heads=_A["num_attention_heads"],
                      head_dim=_A["head_dim"], global_head_dim=_A["global_head_dim"],
                      backbone=BACKBONE_WIDTH["tiny-assistant"], vocab=_A["vocab_size"])


def write_assistant_checkpoint(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 4-layer (3 sliding + 1 full) random drafter in HF layout (float32); returns its tensors by HF name."""
    a = TINY_ASSISTANT
    rng = np.random.default_rng(seed)
    h, inter = a["hidden"], a["intermediate"]

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1 + 0.3 * rng.uniform(-1, 1, n)).astype(np.float32)

    t = {"model.embed_tokens.weight": (0.02 * rng.standard_normal((a["vocab"], h))).astype(np.float32),
         "model.norm.weight": norm(h),
         "pre_projection.weight": mat(h, 2 * a["backbone"]),
         "post_projection.weight": mat(a["backbone"], h)}
    for i in range(4):
        d = a["global_head_dim"] if i == 3 else a["head_dim"]
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": mat(a["heads"] * d, h), p + "self_attn.q_norm.weight": norm(d),
                  p + "self_attn.o_proj.weight": mat(h, a["heads"] * d), p + "mlp.gate_proj.weight": mat(inter, h),
                  p + "mlp.up_proj.weight": mat(inter, h), p + "mlp.down_proj.weight": mat(h, inter),
                  p + "layer_scalar": np.array([0.8 + 0.1 * i], np.float32)})
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            t[p + n + ".weight"] = norm(h)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "model.safetensors"))
    text = {"model_type": "gemma4_unified_text", "vocab_size": a["vocab"], "hidden_size": h,
            "intermediate_size": inter, "num_hidden_layers": 4, "num_attention_heads": a["heads"],
            "num_key_value_heads": _A["num_key_value_heads"], "head_dim": a["head_dim"],
            "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
            "per_layer_config": {"3": {"head_dim": a["global_head_dim"], "num_key_value_heads": 1}},
            "attention_k_eq_v": True, "num_kv_shared_layers": 4, "sliding_window": _A["sliding_window"]}
    config = {"model_type": "gemma4_unified_assistant", "text_config": text, "backbone_hidden_size": a["backbone"],
              "use_ordered_embeddings": False, "num_centroids": 2048, "centroid_intermediate_top_k": 32,
              "tie_word_embeddings": True}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return t


# -- an mlx-vlm-style converted folder, made by renaming (see the module docstring) ---------------------------


def mlx_vlm_name(hf_name: str) -> str | None:
    """mlx-vlm's name for an HF tensor (its ``sanitize``), or None when it drops the tensor."""
    if "rotary_emb" in hf_name or hf_name == "lm_head.weight":
        return None
    name = hf_name.removeprefix("model.")
    if name.startswith("language_model.") and not name.startswith("language_model.model."):
        name = "language_model.model." + name[len("language_model."):]
    return name


def make_mlx_vlm_style(src: Path, out: Path, bits: int = 4, group_size: int = 64,
                       overrides: dict[str, dict] | None = None) -> None:
    """Write ``out`` as mlx-vlm would convert ``src``: its names, quantized Linear/Embedding, its config block."""
    overrides = overrides or {}
    weights: dict[str, mx.array] = {}
    for f in weight_files(src):
        weights.update(mx.load(str(f)))
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, mx.array] = {}
    for hf_name, w in weights.items():
        name = mlx_vlm_name(hf_name)
        if name is None:
            continue
        module = name.removesuffix(".weight")
        is_matrix = name.endswith(".weight") and w.ndim == 2 and "norm" not in name and "_ln" not in name
        spec = overrides.get(module, {"bits": bits, "group_size": group_size})
        if is_matrix and w.shape[-1] % spec["group_size"] == 0:
            wq, scales, biases = mx.quantize(w.astype(mx.bfloat16), group_size=spec["group_size"], bits=spec["bits"])
            result.update({f"{module}.weight": wq, f"{module}.scales": scales, f"{module}.biases": biases})
        else:
            result[name] = w.astype(mx.bfloat16)
    mx.save_safetensors(str(out / "model.safetensors"), result, metadata={"format": "mlx"})
    index = {"metadata": {"total_size": sum(v.nbytes for v in result.values())},
             "weight_map": {k: "model.safetensors" for k in sorted(result)}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))
    config = json.loads((src / "config.json").read_text())
    block = {"group_size": group_size, "bits": bits, "mode": "affine", **overrides}
    config["quantization"] = block
    config["quantization_config"] = block
    (out / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=4))
    for extra in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / extra).is_file():
            shutil.copyfile(src / extra, out / extra)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["mlx-vlm"])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64)
    args = parser.parse_args()
    make_mlx_vlm_style(args.src, args.out, args.bits, args.group_size)
    sys.exit(0)
