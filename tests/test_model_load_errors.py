"""Bad checkpoints give a specific error naming the problem, never a silently random model."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.errors import ModelLoadError
from mlx_gemma4.loader import load
from tests.reference import parity_cases, reference_logits

SHARD = "model.safetensors"


@pytest.fixture()
def ckpt_copy(tiny_ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt.path, dst)
    return dst


def _edit_config(folder, edit):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_weights(folder, edit):
    weights = dict(mx.load(str(folder / SHARD)))
    edit(weights)
    mx.save_safetensors(str(folder / SHARD), weights)


def test_wrong_model_type(ckpt_copy):
    _edit_config(ckpt_copy, lambda c: c.update(model_type="gemma3"))
    with pytest.raises(ModelLoadError, match="unsupported model_type 'gemma3'"):
        load(ckpt_copy)


def test_unsupported_activation_is_refused(ckpt_copy):
    _edit_config(ckpt_copy, lambda c: c["text_config"].update(hidden_activation="silu"))
    with pytest.raises(ModelLoadError, match="unsupported hidden_activation 'silu'"):
        load(ckpt_copy)


def test_missing_tensor_is_named(ckpt_copy):
    name = "model.language_model.layers.3.mlp.up_proj.weight"
    _edit_weights(ckpt_copy, lambda w: w.pop(name))
    with pytest.raises(ModelLoadError, match=r"missing tensor 'language_model\.layers\.3\.mlp\.up_proj\.weight'"):
        load(ckpt_copy)


def test_wrong_shape_is_named(ckpt_copy):
    name = "model.language_model.layers.2.self_attn.k_proj.weight"  # a full layer: 1 KV head × 32
    _edit_weights(ckpt_copy, lambda w: w.update({name: mx.zeros((64, 64))}))
    with pytest.raises(ModelLoadError, match=r"'language_model\.layers\.2\.self_attn\.k_proj\.weight' has shape"):
        load(ckpt_copy)


def test_size_missing_from_config(ckpt_copy):
    _edit_config(ckpt_copy, lambda c: c["text_config"].pop("hidden_size"))
    with pytest.raises(ModelLoadError, match="text_config.hidden_size"):
        load(ckpt_copy)


def test_unexpected_tensor_is_named(ckpt_copy):
    _edit_weights(ckpt_copy, lambda w: w.update({"model.language_model.extra.weight": mx.zeros((2,))}))
    with pytest.raises(ModelLoadError, match=r"unexpected tensor 'language_model\.extra\.weight'"):
        load(ckpt_copy)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load(tmp_path)
    with pytest.raises(ModelLoadError, match="no such checkpoint folder"):
        load(tmp_path / "nope")


def _full_layer_geometry(config: ModelConfig) -> tuple[int, int]:
    t = config.text_config
    i = t.layer_types.index("full_attention")
    return t.layer_head_dims[i], t.layer_kv_heads[i]


def test_config_forms_agree(tiny_ckpt):
    """per_layer_config (as transformers saves it) and global_head_dim / num_global_key_value_heads."""
    saved = json.loads((tiny_ckpt.path / "config.json").read_text())
    assert "per_layer_config" in saved["text_config"]
    assert _full_layer_geometry(ModelConfig.from_dict(saved)) == (32, 1)
    alt = json.loads(json.dumps(saved))
    alt["text_config"].pop("per_layer_config")
    alt["text_config"].update(global_head_dim=32, num_global_key_value_heads=1)
    assert _full_layer_geometry(ModelConfig.from_dict(alt)) == (32, 1)


@pytest.mark.parametrize("form", ["global_fields", "no_geometry_fields"])
def test_other_config_forms_load_and_match(tiny_ckpt, ckpt_copy, form):
    def edit(c):
        c["text_config"].pop("per_layer_config")
        if form == "global_fields":
            c["text_config"].update(global_head_dim=32, num_global_key_value_heads=1)

    _edit_config(ckpt_copy, edit)
    model = load(ckpt_copy)[0]
    prompt = parity_cases(tiny_ckpt.ids)["image_audio_text"]
    assert np.abs(np.array(model(**prompt.mlx_kwargs())) - reference_logits(tiny_ckpt, prompt)).max() <= 1e-3


def test_sharded_checkpoint_with_index_loads(tiny_ckpt, tmp_path):
    tiny_ckpt.model.save_pretrained(tmp_path, max_shard_size="20MB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    model = load(tmp_path)[0]
    prompt = parity_cases(tiny_ckpt.ids)["two_images"]
    assert np.abs(np.array(model(**prompt.mlx_kwargs())) - reference_logits(tiny_ckpt, prompt)).max() <= 1e-3
    (tmp_path / shards[-1]).unlink()
    with pytest.raises(ModelLoadError, match=f"shard {shards[-1]} named by the index is missing"):
        load(tmp_path)


def test_text_only_export_loads(tiny_ckpt, tmp_path):
    """A Gemma4UnifiedForCausalLM export (prefix ``model.``, model_type gemma4_unified_text) loads too."""
    import torch
    from transformers import Gemma4UnifiedForCausalLM

    text_model = Gemma4UnifiedForCausalLM(tiny_ckpt.config.text_config).eval()
    text_model.model.load_state_dict(tiny_ckpt.model.model.language_model.state_dict())
    text_model.save_pretrained(tmp_path)
    model = load(tmp_path)[0]
    assert not hasattr(model, "vision_embedder") and not hasattr(model, "embed_audio")
    prompt = parity_cases(tiny_ckpt.ids)["text"]
    with torch.no_grad():
        ref = text_model(torch.from_numpy(prompt.input_ids)).logits.numpy()
    assert np.abs(np.array(model(prompt.input_ids)) - ref).max() <= 1e-3


def test_load_returns_the_checkpoints_processor(tiny_ckpt):
    from mlx_gemma4.processing import Processor

    model, processor = load(tiny_ckpt.path)
    assert isinstance(processor, Processor)
    assert load(tiny_ckpt.path, with_processor=False)[1] is None
