"""The modality table: one row per modality, read by the processor and the model, numpy only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from mlx_gemma4.config import ModelConfig
from mlx_gemma4.model.gemma4 import EMBEDDERS
from mlx_gemma4.processing.modalities import ARRAY_KEYS, BY_MESSAGE_TYPE, MODALITIES
from mlx_gemma4.processing.processor import ModelInputs
from mlx_gemma4.processing.prompt import SpecialTokens

BOI, IMG, EOI, BOA, AUD, EOA, VID = 255999, 258880, 258882, 256000, 258881, 258883, 258884


def test_array_keys_are_every_modality_array_in_table_order():
    assert [m.name for m in MODALITIES] == ["image", "audio", "video"]
    assert ARRAY_KEYS == ("pixel_values", "image_position_ids", "input_features", "input_features_mask",
                          "pixel_values_videos", "video_position_ids")
    assert ("input_ids", *ARRAY_KEYS) == ModelInputs._ARRAYS
    assert set(BY_MESSAGE_TYPE) == {"image", "audio", "video"}


def test_model_embedders_match_the_table():
    assert list(EMBEDDERS) == [m.name for m in MODALITIES]
    config_fields = ModelConfig.__dataclass_fields__
    special_fields = SpecialTokens.__dataclass_fields__
    for m in MODALITIES:
        token_field, _, keys = EMBEDDERS[m.name]
        assert token_field == m.placeholder_id and keys == m.arrays
        for f in (m.placeholder_id, m.begin_id, m.end_id):
            assert f in config_fields, f
        for f in (m.placeholder, m.begin, m.end):
            assert f in special_fields, f


def test_rows_count_runs_of_the_soft_token_not_begin_tokens():
    """Video frames are framed by the image begin/end tokens; rows are counted per soft-token run."""
    ids = np.array(
        [2, BOI, IMG, IMG, EOI, 7, 8, BOI, VID, VID, EOI, 9, BOI, VID, VID, EOI, BOA, AUD, EOA, BOA, AUD, AUD, EOA,
         BOI, IMG, EOI]
    )
    counts = {m.name: m.rows(ids, {"image": IMG, "audio": AUD, "video": VID}[m.name]) for m in MODALITIES}
    assert counts == {"image": 2, "audio": 2, "video": 2}
    assert MODALITIES[0].rows(np.array([IMG, IMG]), IMG) == 1
    assert MODALITIES[0].rows(np.array([], np.int64), IMG) == 0


def test_modalities_module_never_imports_mlx():
    code = "import sys, mlx_gemma4.processing.modalities; print(any(k.split('.')[0] == 'mlx' for k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
