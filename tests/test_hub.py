"""``--model`` resolution: folders as is, hub ids downloaded once, originals converted once into the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlx_gemma4 import hub
from mlx_gemma4.errors import InputError, ModelLoadError
from mlx_gemma4.loader import load
from tests.convert_helpers import hub_cache

REPO = "test-org/tiny-gemma4"


@pytest.fixture
def offline_hub(tiny_ckpt, tmp_path, monkeypatch):
    """An offline hub cache holding the tiny original checkpoint, and an empty conversion cache."""
    import huggingface_hub.constants as hub_constants

    cache = hub_cache(tmp_path, tiny_ckpt.path, REPO)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("MLX_GEMMA4_CACHE", str(tmp_path / "converted"))
    return cache


def test_a_folder_is_used_as_it_is(tiny_ckpt):
    assert hub.resolve_model(tiny_ckpt.path) == tiny_ckpt.path


def test_a_hub_original_is_converted_once_then_reused(offline_hub, tmp_path):
    first = hub.resolve_model(REPO, bits=8)
    assert first == hub.converted_folder(REPO, 8) and first.is_relative_to(tmp_path / "converted")
    model = load(first, with_processor=False)[0]
    assert model.language_model.embed_tokens.bits == 8
    shutil.rmtree(offline_hub)  # the original is gone: the converted copy is enough from now on
    assert hub.resolve_model(REPO, bits=8) == first


def test_sixteen_bits_use_the_download_itself(offline_hub):
    folder = hub.resolve_model(REPO, bits=16)
    assert folder.parent.name == "snapshots" and not hub.converted_folder(REPO, 16).exists()


def test_a_quantized_hub_repo_is_not_converted_again(offline_hub, tmp_path):
    q = hub.resolve_model(REPO, bits=4)
    cache = hub_cache(tmp_path / "q", q, "test-org/tiny-q4")
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_CACHE = str(cache)  # restored by monkeypatch in the fixture
    assert hub.resolve_model("test-org/tiny-q4", bits=8).parent.name == "snapshots"
    assert not hub.converted_folder("test-org/tiny-q4", 8).exists()


def test_offline_with_nothing_cached_says_what_to_run(offline_hub):
    with pytest.raises(ModelLoadError, match="not in the local hub cache.*run the same command once online"):
        hub.resolve_model("test-org/never-downloaded")


@pytest.mark.parametrize(
    ("spec", "bits", "message"),
    [("./no/such/folder", 4, "no such checkpoint folder"), ("a/b/c", 4, "not a hub id"),
     (REPO, 3, "--bits must be one of")],
)
def test_bad_specs_are_input_errors(offline_hub, spec, bits, message):
    with pytest.raises(InputError, match=message):
        hub.resolve_model(spec, bits=bits)


def test_a_file_is_not_a_checkpoint(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="is a file"):
        hub.resolve_model(Path(f))
