"""The stand-in tokenizer of random checkpoints: every id spells visible text, specials at their real ids.

The real Gemma 4 tokenizer cannot be fetched offline, so synthetic checkpoints (``gemma4 synth``) and the
test fixtures get this one, built for the checkpoint's own vocabulary size. It is a SentencePiece-style
Unigram model in a ``tokenizer.json`` that transformers' AutoTokenizer and mlx-lm load as they load the
real one (spaces become ``▁``, decoder Replace → ByteFallback → Fuse, as in Gemma's own file):

* the special tokens at the ids of the real Gemma 4 vocabulary (text tokens: fixed; image/audio/video
  tokens: read from the checkpoint's config, which may move them into a small test vocabulary);
* ``\\n`` at 107 as in Gemma's vocabulary, whitespace, printable ASCII and the UTF-8 lead/continuation
  bytes (so any text encodes, non-ASCII through byte fallback);
* every other id a generated pronounceable piece, most of them word-initial (``▁kato``), so a random
  model's output decodes to visible, space-separated gibberish instead of ``''`` or ``<unk>``.

ASCII control characters other than tab/newline/carriage return have no piece and encode as ``<unk>``;
that keeps every id printable. The chat template is written here too: Gemma 4's prompt format.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

# Text special tokens at their ids in the real Gemma 4 vocabulary (the same in every checkpoint; the
# think/channel/tool ids as other runtimes' Gemma 4 fixtures give them). The runtime never hard-codes
# them: it reads every id from the checkpoint's tokenizer.
TEXT_SPECIAL_IDS: dict[str, int] = {
    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
    "<|tool>": 46, "<tool|>": 47, "<|tool_call>": 48, "<tool_call|>": 49,
    "<|tool_response>": 50, "<tool_response|>": 51, '<|"|>': 52,
    "<|think|>": 98, "<|channel>": 100, "<channel|>": 101, "<|turn>": 105, "<turn|>": 106,
}
# Media tokens: the config field that holds each id, and its value in the real 12B checkpoint.
MEDIA_TOKEN_FIELDS: dict[str, tuple[str, int]] = {
    "<|image>": ("boi_token_id", 255999), "<|audio>": ("boa_token_id", 256000),
    "<|image|>": ("image_token_id", 258880), "<|audio|>": ("audio_token_id", 258881),
    "<image|>": ("eoi_token_id", 258882), "<audio|>": ("eoa_token_index", 258883),
    "<|video|>": ("video_token_id", 258884),
}
# Names a Gemma 4 tokenizer_config.json gives its special tokens (the processor reads image_token, …).
NAMED_TOKENS: dict[str, str] = {
    "image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
    "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>",
    "sot_token": "<|turn>", "eot_token": "<turn|>", "soc_token": "<|channel>", "eoc_token": "<channel|>",
    "think_token": "<|think|>", "escape_token": '<|"|>', "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>", "stc_token": "<|tool_call>", "etc_token": "<tool_call|>",
    "std_token": "<|tool>", "etd_token": "<tool|>",
}
REAL_VOCAB_SIZE = 262144
NEWLINE_ID = 107
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "dr", "gr", "kr", "pl", "sh", "st", "th", "tr")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "n", "r", "s", "l", "m", "t", "k")
# Words the prompt format puts right after a special token: one piece each, as in Gemma's vocabulary.
_PROMPT_WORDS = ("user", "model", "system", "developer", "thought", "call", "response", "declaration")
_STEP = 7919  # a prime coprime to the syllable count: walks the syllable pairs in a scrambled order


def special_ids(config: dict[str, Any] | None = None) -> dict[str, int]:
    """Special token → id: the fixed text tokens plus the media tokens at the ids ``config`` gives them."""
    config = config or {}
    media = {tok: int(config.get(field, real)) for tok, (field, real) in MEDIA_TOKEN_FIELDS.items()}
    return {**TEXT_SPECIAL_IDS, **media}


def vocab_size_of(config: dict[str, Any] | None) -> int:
    """The vocabulary size of a checkpoint config (top level or its ``text_config``)."""
    config = config or {}
    return int(config.get("text_config", config).get("vocab_size", REAL_VOCAB_SIZE))


def _syllables() -> list[str]:
    return [o + n + c for o in _ONSETS for n in _NUCLEI for c in _CODAS]


def _words(syllables: list[str]):
    """Endless pronounceable words: every syllable, then scrambled pairs, then scrambled triples."""
    s = len(syllables)
    yield from syllables
    for length in (2, 3):
        space = s**length
        for i in range(space):
            k, parts = (i * _STEP) % space, []
            for _ in range(length):
                k, r = divmod(k, s)
                parts.append(syllables[r])
            yield "".join(parts)


def _basic_pieces() -> list[str]:
    """The pieces every stand-in has: whitespace, printable ASCII, non-ASCII bytes (byte fallback), role words."""
    whitespace = ["▁", "\n\n", "\t", "\r"]
    ascii_ = [chr(c) for c in range(0x21, 0x7F)]
    bytes_ = [f"<0x{b:02X}>" for b in range(0x80, 0x100)]  # every byte of a non-ASCII UTF-8 character
    return [*whitespace, *ascii_, *bytes_, *_PROMPT_WORDS]


def standin_vocab(vocab_size: int, specials: dict[str, int]) -> list[str]:
    """The piece of every id 0 … vocab_size-1: specials at their ids, ``\\n`` at 107, generated pieces elsewhere."""
    pinned = dict(specials)
    if vocab_size > NEWLINE_ID and NEWLINE_ID not in pinned.values():
        pinned["\n"] = NEWLINE_ID
    bad = {t: i for t, i in pinned.items() if not 0 <= i < vocab_size}
    if bad:
        raise ValueError(f"special token ids outside the vocabulary of {vocab_size}: {bad}")
    pieces: list[str] = [""] * vocab_size
    for token, i in pinned.items():
        pieces[i] = token
    free = [i for i, p in enumerate(pieces) if not p]
    basic = _basic_pieces()
    if len(free) < len(basic):
        raise ValueError(f"a vocabulary of {vocab_size} is too small for the stand-in tokenizer")
    seen = set(pinned)
    syllables = _syllables()  # bare: they glue onto the word before; then word-initial pieces
    candidates = itertools.chain(basic, syllables, ("▁" + w for w in _words(syllables)))
    for i in free:
        pieces[i] = next(p for p in candidates if p not in seen)
        seen.add(pieces[i])
    return pieces


# Gemma 4's prompt format: <bos>; a system turn when the first message is system/developer, tools are
# given or thinking is on (<|think|> first, then the system text, then one declaration per tool);
# <|turn>ROLE\n…<turn|>\n per message with assistant → model; trimmed text; media items as their single
# placeholder inline; earlier thought blocks stripped from model turns; tool calls and responses in
# Gemma's key:value syntax (keys sorted, strings between <|"|>), a tool response continuing the model's
# turn; generation prompt <|turn>model\n plus an empty thought block when thinking is off.
CHAT_TEMPLATE = r"""
{%- macro value(v) -%}
    {%- if v is string -%}{{- '<|"|>' + v + '<|"|>' -}}
    {%- elif v is mapping -%}
        {{- '{' -}}{%- for k, x in v | dictsort -%}{{- k + ':' + value(x) -}}{{- '' if loop.last else ',' -}}
        {%- endfor -%}{{- '}' -}}
    {%- elif v is iterable -%}
        {{- '[' -}}{%- for x in v -%}{{- value(x) -}}{{- '' if loop.last else ',' -}}{%- endfor -%}{{- ']' -}}
    {%- elif v is sameas true or v is sameas false -%}{{- v | string | lower -}}
    {%- else -%}{{- v | string -}}
    {%- endif -%}
{%- endmacro -%}
{%- macro render_text(text, strip_thoughts) -%}
    {%- if strip_thoughts and '<channel|>' in text -%}{{- text.split('<channel|>')[-1] | trim -}}
    {%- else -%}{{- text | trim -}}
    {%- endif -%}
{%- endmacro -%}
{%- macro render_content(content, strip_thoughts) -%}
    {%- if content is string -%}{{- render_text(content, strip_thoughts) -}}
    {%- elif content -%}
        {%- for item in content -%}
            {%- if item['type'] == 'text' -%}{{- render_text(item['text'], strip_thoughts) -}}
            {%- elif item['type'] in ['image', 'audio', 'video'] -%}{{- '<|' + item['type'] + '|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set loop_messages = messages -%}
{%- set has_system = messages and messages[0]['role'] in ['system', 'developer'] -%}
{%- if has_system or tools or enable_thinking -%}
    {{- '<|turn>system\n' -}}
    {%- if enable_thinking -%}{{- '<|think|>' -}}{%- endif -%}
    {%- if has_system -%}
        {{- render_content(messages[0]['content'], false) -}}
        {%- set loop_messages = messages[1:] -%}
    {%- endif -%}
    {%- for tool in tools or [] -%}
        {%- set fn = tool['function'] if tool['function'] is defined else tool -%}
        {{- '<|tool>declaration:' + fn['name'] -}}
        {{- value({'description': fn['description'] or '', 'parameters': fn['parameters'] or {}}) + '<tool|>' -}}
    {%- endfor -%}
    {{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {%- if role == 'tool' -%}
        {%- set result = message['content'] if message['content'] is mapping else {'value': message['content']} -%}
        {{- '<|tool_response>response:' + (message['name'] or 'tool') + value(result) + '<tool_response|>' -}}
    {%- else -%}
        {%- if not (role == 'model' and loop.previtem is defined and loop.previtem['role'] == 'tool') -%}
            {{- '<|turn>' + role + '\n' -}}
        {%- endif -%}
        {{- render_content(message['content'], role == 'model') -}}
        {%- for call in message['tool_calls'] or [] -%}
            {%- set args = call['function']['arguments'] -%}
            {{- '<|tool_call>call:' + call['function']['name'] + (args if args is string else value(args)) -}}
            {{- '<tool_call|>' -}}
        {%- endfor -%}
        {%- if not message['tool_calls'] -%}{{- '<turn|>\n' -}}{%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not (loop_messages and loop_messages[-1]['role'] == 'tool') -%}
    {{- '<|turn>model\n' -}}
    {%- if not enable_thinking -%}{{- '<|channel>thought\n<channel|>' -}}{%- endif -%}
{%- endif -%}
"""


def build_tokenizer(config: dict[str, Any] | None = None):
    """The stand-in as a ``tokenizers.Tokenizer`` for the vocabulary and media ids of ``config``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    specials = special_ids(config)
    pieces = standin_vocab(vocab_size_of(config), specials)
    # Equal scores: Viterbi then picks the fewest pieces, which is all a stand-in needs.
    model = models.Unigram([(p, -1.0) for p in pieces], unk_id=specials["<unk>"], byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in sorted(specials, key=specials.get)])
    return tok


def tokenizer_config() -> dict[str, Any]:
    """``tokenizer_config.json``: Gemma 4's special-token names; the chat template emits ``<bos>`` itself."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "mask_token": "<mask>", "add_bos_token": False, "add_eos_token": False, "padding_side": "left",
        "model_max_length": REAL_VOCAB_SIZE, "extra_special_tokens": dict(NAMED_TOKENS),
    }


def processor_config(max_soft_tokens: int = 280) -> dict[str, Any]:
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
                            "max_soft_tokens": 70, "return_metadata": False,
                            "video_processor_type": "Gemma4UnifiedVideoProcessor"},
        "feature_extractor": {"feature_size": 640, "sampling_rate": 16000, "padding_value": 0.0,
                              "padding_side": "right", "return_attention_mask": True,
                              "audio_samples_per_token": 640,
                              "feature_extractor_type": "Gemma4UnifiedAudioFeatureExtractor"},
        "image_seq_length": max_soft_tokens,
        "audio_seq_length": 750,
        "audio_ms_per_token": 40,
    }


def write_standin_processor(folder: str | Path, config: dict[str, Any] | None = None,
                            max_soft_tokens: int = 280) -> None:
    """Write the tokenizer, its config, the chat template and ``processor_config.json`` for ``config``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(config).save(str(folder / "tokenizer.json"))
    files = {
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2) + "\n",
        "chat_template.jinja": CHAT_TEMPLATE,
        "processor_config.json": json.dumps(processor_config(max_soft_tokens), indent=2) + "\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
