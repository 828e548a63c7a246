"""Messages and files in, text out: the Processor, the model and the generation loop together."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_gemma4 import generate, load, stream_generate
from tests.reference import Prompt, reference_greedy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_messages_with_files_generate_the_reference_greedy_tokens(tiny_ckpt):
    model, processor = load(tiny_ckpt.path)
    messages = [{"role": "user", "content": [
        {"type": "image", "path": str(EXAMPLES / "chart.png")},
        {"type": "text", "text": "What does this chart show ?"},
        {"type": "audio", "path": str(EXAMPLES / "speech.ogg")},
    ]}]
    inputs = processor(messages)
    # What the model is expected to say, from the reference model fed the same arrays (ids: the
    # reference has no detokenizer of its own here).
    defaults = model.generation_defaults
    expected = reference_greedy(
        tiny_ckpt, Prompt(**{k: np.asarray(v) for k, v in inputs.items()}), 12, suppress=defaults.suppress_tokens
    )
    stops = set(defaults.eos_token_ids)
    if any(t in stops for t in expected):
        expected = expected[: next(i for i, t in enumerate(expected) if t in stops) + 1]
    result = generate(model, processor, messages, temperature=0, max_tokens=12)
    assert result.token_ids == expected
    assert result.stats.prompt_tokens == inputs.input_ids.shape[1]
    assert result.stats.finish_reason == ("stop" if len(expected) < 12 else "length")


def test_streamed_pieces_add_up_to_the_whole_answer(tiny_ckpt):
    model, processor = load(tiny_ckpt.path)
    messages = [{"role": "user", "content": "Hello world , what is this ?"}]
    chunks = list(stream_generate(model, processor, messages, temperature=0, max_tokens=10))
    assert chunks[-1].stats is not None and chunks[-1].stats.generation_tokens == sum(len(c.token_ids) for c in chunks)
    whole = generate(model, processor, messages, temperature=0, max_tokens=10)
    assert "".join(c.text for c in chunks) == whole.text
    assert [t for c in chunks for t in c.token_ids] == whole.token_ids
