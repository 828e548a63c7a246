"""Measured max |Δlogit| of the MLX model vs the transformers reference, per parity case.

Run from the repository root:  python -m benchmarks.model_parity > benchmarks/model_parity.md
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch

from mlx_gemma4.loader import load
from tests.reference import (
    REAL_12B_TEXT,
    SMALL_VOCAB_IDS,
    PromptBuilder,
    build_checkpoint,
    mm_token_type_ids,
    parity_cases,
    reference_logits,
    with_dtype,
)


@torch.no_grad()
def _ref_fp64(ck64, prompt) -> np.ndarray:
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in prompt.mlx_kwargs().items()}
    kw = {k: v.double() if v.is_floating_point() else v for k, v in kw.items()}
    kw["mm_token_type_ids"] = torch.from_numpy(mm_token_type_ids(prompt.input_ids, ck64.ids))
    return ck64.model(**kw, use_cache=False).logits.numpy()


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    ck = build_checkpoint(tmp / "tiny")
    m32, m16 = load(ck.path)[0], load(ck.path, dtype=mx.bfloat16)[0]
    ck16, ck64 = with_dtype(ck, torch.bfloat16), with_dtype(ck, torch.float64)
    print(
        "| case | tokens | ours fp32 vs ref fp32 | ref fp32 vs ref fp64 "
        "| ours bf16 vs ref fp32 | ref bf16 vs ref fp32 |"
    )
    print("|---|---|---|---|---|---|")
    for name, prompt in parity_cases(ck.ids).items():
        ref = reference_logits(ck, prompt)
        ours32 = np.array(m32(**prompt.mlx_kwargs()))
        ours16 = np.array(m16(**prompt.mlx_kwargs()).astype(mx.float32))
        cols = [
            np.abs(ours32 - ref).max(),
            np.abs(ref - _ref_fp64(ck64, prompt)).max(),
            np.abs(ours16 - ref).max(),
            np.abs(reference_logits(ck16, prompt) - ref).max(),
        ]
        print(f"| {name} | {prompt.input_ids.shape[1]} | " + " | ".join(f"{c:.2e}" for c in cols) + " |")
    big = build_checkpoint(tmp / "real12b", text=REAL_12B_TEXT, vision={}, top=SMALL_VOCAB_IDS, seed=1)
    prompt = PromptBuilder(big.ids, seed=3).text(4).image(3, 2).text(3).audio(2000).text(2).build()
    err = np.abs(np.array(load(big.path)[0](**prompt.mlx_kwargs())) - reference_logits(big, prompt)).max()
    print(f"\nReal 12B layer sizes (2 layers, vocab 1024), image + audio + text, fp32: max |Δ| = {err:.2e}")


if __name__ == "__main__":
    main()
