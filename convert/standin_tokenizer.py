"""A stand-in tokenizer + processor config with the real special ids (spec §7.1, §9.3), for synthetic checkpoints.

The real Gemma 4 tokenizer cannot be fetched here, so synthetic checkpoints get a ``tokenizers``
WordLevel vocabulary: the special strings at their real ids, a few hundred ordinary words at free ids,
whitespace pre-tokenization. Good enough to run every code path (chat template, placeholders, stop
tokens); not a real tokenizer. ``tests/reference_tokenizer.py`` may import ``write_standin_processor``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

SPECIAL_TOKENS: dict[str, int] = {
    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
    "<|tool_response>": 50, "<|turn>": 105, "<turn|>": 106,
    "<|image>": 255999, "<|audio>": 256000,
    "<|image|>": 258880, "<|audio|>": 258881, "<image|>": 258882, "<audio|>": 258883, "<|video|>": 258884,
}
NAMED_TOKENS = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
    "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
    "sot_token": "<|turn>", "eot_token": "<turn|>", "video_token": "<|video|>",
}
FIRST_WORD_ID = 1000
WORDS = (
    "the", "a", "an", "of", "to", "and", "in", "is", "it", "that", "this", "was", "for", "on", "with", "as", "be",
    "at", "by", "from", "or", "are", "not", "have", "what", "which", "describe", "image", "audio", "picture",
    "photo", "sound", "video", "frame", "tell", "me", "about", "hello", "hi", "please", "thanks", "yes", "no",
    "cat", "dog", "bird", "car", "tree", "house", "person", "man", "woman", "child", "sky", "sea", "water", "red",
    "green", "blue", "black", "white", "small", "big", "one", "two", "three", "four", "five", "first", "last",
    "left", "right", "top", "bottom", "here", "there", "now", "then", "who",
)

# A minimal chat template with the real turn markers (spec §7.2, §7.3): good enough for synthetic runs.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] | trim }}{% elif c['type'] == 'image' %}<|image|>"
    "{% elif c['type'] == 'audio' %}<|audio|>{% elif c['type'] == 'video' %}<|video|>{% endif %}"
    "{% endfor %}{% endif %}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)


def standin_vocab() -> dict[str, int]:
    """Special strings at their real ids plus ordinary words from id 1000."""
    vocab = dict(SPECIAL_TOKENS)
    vocab.update({w: FIRST_WORD_ID + i for i, w in enumerate(dict.fromkeys(WORDS))})
    return vocab


def write_standin_tokenizer(folder: Path) -> None:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` of the stand-in."""
    tok = Tokenizer(models.WordLevel(standin_vocab(), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "mask_token": "<mask>", "add_bos_token": False, "padding_side": "left",
        "model_max_length": 262144, "extra_special_tokens": NAMED_TOKENS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def processor_config(max_soft_tokens: int = 280) -> dict:
    """``processor_config.json`` with the reference processors' defaults (transformers 5.23 field names)."""
    common = {
        "do_convert_rgb": True, "do_resize": True, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "patch_size": 16, "pooling_kernel_size": 3,
        "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0],
    }
    return {
        "processor_class": "Gemma4UnifiedProcessor",
        "image_processor": {**common, "do_normalize": False, "max_soft_tokens": max_soft_tokens,
                            "image_processor_type": "Gemma4UnifiedImageProcessor"},
        "video_processor": {**common, "do_normalize": True, "do_sample_frames": True, "num_frames": 32,
                            "max_soft_tokens": 70, "video_processor_type": "Gemma4UnifiedVideoProcessor"},
        "feature_extractor": {"feature_size": 640, "sampling_rate": 16000, "padding_value": 0.0,
                              "padding_side": "right", "return_attention_mask": True,
                              "audio_samples_per_token": 640,
                              "feature_extractor_type": "Gemma4UnifiedAudioFeatureExtractor"},
        "image_seq_length": max_soft_tokens,
        "audio_ms_per_token": 40,
    }


def write_standin_processor(folder: Path, max_soft_tokens: int = 280) -> None:
    """Stand-in tokenizer files, chat template and ``processor_config.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_standin_tokenizer(folder)
    (folder / "processor_config.json").write_text(json.dumps(processor_config(max_soft_tokens), indent=2) + "\n")
