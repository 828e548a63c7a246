"""Stand-in Gemma 4 tokenizer, chat template and processor config for tests (spec §9.3, §7.2).

The real tokenizer cannot be downloaded here, so tests use a WordLevel tokenizer that has the real
special-token ids (0–4, 50, 105, 106, 255999, 256000, 258880–258884), the thinking/tool tokens at
deliberately unusual ids (so code that hard-codes guessed ids fails), and ordinary words from id 1000.
The files are written by transformers' own ``Gemma4UnifiedProcessor.save_pretrained``, so the folder
has exactly the layout a real checkpoint has and ``AutoProcessor.from_pretrained`` rebuilds the
reference processor from it.
"""

from __future__ import annotations

from pathlib import Path

# Real ids (spec §7.1).
REAL_SPECIAL_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "<|tool_response>": 50,
    "<|turn>": 105,
    "<turn|>": 106,
    "<|image>": 255999,
    "<|audio>": 256000,
    "<|image|>": 258880,
    "<|audio|>": 258881,
    "<image|>": 258882,
    "<audio|>": 258883,
    "<|video|>": 258884,
}
# Ids unknown for the real checkpoint ("?" in spec §7.1): chosen free ids, unlike any guess.
CHOSEN_SPECIAL_IDS = {
    "<|think|>": 900,
    "<|channel>": 901,
    "<channel|>": 902,
    "<|tool>": 903,
    "<tool|>": 904,
    "<|tool_call>": 905,
    "<tool_call|>": 906,
    "<tool_response|>": 907,
    '<|"|>': 908,
}
SPECIAL_IDS = {**REAL_SPECIAL_IDS, **CHOSEN_SPECIAL_IDS}
FIRST_WORD_ID = 1000

# Named tokens as a Gemma 4 tokenizer_config names them (spec §7.1).
NAMED_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
    "soc_token": "<|channel>",
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
    "escape_token": '<|"|>',
    "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>",
    "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>",
    "std_token": "<|tool>",
    "etd_token": "<tool|>",
}

_WORD_LINES = (
    "user model system developer assistant thought response call declaration",
    "a an the this that these those it its is are was were be been being am do does did done have has had",
    "i you he she we they me him her us them my your our their what which who whom whose where when why how",
    "and or but not no yes if then else so because as of in on at to from by with without for about into over",
    "under between after before again once here there all any both each few more most other some such only",
    "own same than too very can will just should now one two three four five six seven eight nine ten",
    "describe describes described picture image photo audio sound clip speech voice chart bar bars line lines",
    "red green blue yellow black white orange purple gray color colors colour shape shapes circle square",
    "triangle house tree sun sky cloud clouds grass water cat dog person people car road street",
    "what's say says said tell listen look see show shows shown compare difference similar different",
    "answer question think thinking step please thanks thank hello hi world good bad great small large big",
    "left right top bottom middle center above below next first second third last number numbers count",
    "value values highest lowest month months sales january february march april may june year",
    "short long text title label labels axis word words transcribe transcript sentence",
)
WORDS = [w for line in _WORD_LINES for w in line.split()]
PUNCTUATION = [".", ",", "?", "!", ":", ";", "'", '"', "(", ")", "-", "/", "%", "*", "#", "'s", "…"]

# Behaves like the Gemma 4 template (spec §7.2): <bos>; a system turn when the first message is
# system/developer or thinking is on (<|think|> first); <|turn>ROLE\n…<turn|>\n per message with
# assistant → model; trimmed text; inline placeholders; earlier thought blocks stripped from model
# turns; generation prompt <|turn>model\n plus an empty thought block when thinking is off.
CHAT_TEMPLATE = r"""
{%- macro render_text(text, strip_thoughts) -%}
    {%- if strip_thoughts and '<channel|>' in text -%}
        {{- text.split('<channel|>')[-1] | trim -}}
    {%- else -%}
        {{- text | trim -}}
    {%- endif -%}
{%- endmacro -%}
{%- macro render_content(content, strip_thoughts) -%}
    {%- if content is string -%}
        {{- render_text(content, strip_thoughts) -}}
    {%- else -%}
        {%- for item in content -%}
            {%- if item['type'] == 'text' -%}
                {{- render_text(item['text'], strip_thoughts) -}}
            {%- elif item['type'] == 'image' -%}
                {{- '<|image|>' -}}
            {%- elif item['type'] == 'audio' -%}
                {{- '<|audio|>' -}}
            {%- elif item['type'] == 'video' -%}
                {{- '<|video|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set loop_messages = messages -%}
{%- if messages and messages[0]['role'] in ['system', 'developer'] -%}
    {{- '<|turn>system\n' -}}
    {%- if enable_thinking -%}{{- '<|think|>' -}}{%- endif -%}
    {{- render_content(messages[0]['content'], false) -}}
    {{- '<turn|>\n' -}}
    {%- set loop_messages = messages[1:] -%}
{%- elif enable_thinking -%}
    {{- '<|turn>system\n<|think|><turn|>\n' -}}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{- '<|turn>' + role + '\n' -}}
    {{- render_content(message['content'], role == 'model') -}}
    {{- '<turn|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\n' -}}
    {%- if not enable_thinking -%}{{- '<|channel>thought\n<channel|>' -}}{%- endif -%}
{%- endif -%}
"""


def standin_tokenizer():
    """A ``PreTrainedTokenizerFast`` with the real special ids, named tokens and a small word vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(SPECIAL_IDS)
    words = list(dict.fromkeys([*WORDS, *(w.capitalize() for w in WORDS), *PUNCTUATION]))
    for i, word in enumerate(words):
        vocab[word] = FIRST_WORD_ID + i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # drops newlines: parity is asserted on ids
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in sorted(SPECIAL_IDS, key=SPECIAL_IDS.get)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        extra_special_tokens=NAMED_TOKENS,
        padding_side="left",
    )


def build_reference_processor(**image_kwargs):
    """A fresh transformers ``Gemma4UnifiedProcessor`` with the stand-in tokenizer and template."""
    from transformers import (
        Gemma4UnifiedAudioFeatureExtractor,
        Gemma4UnifiedImageProcessor,
        Gemma4UnifiedProcessor,
        Gemma4UnifiedVideoProcessor,
    )

    return Gemma4UnifiedProcessor(
        feature_extractor=Gemma4UnifiedAudioFeatureExtractor(),
        image_processor=Gemma4UnifiedImageProcessor(**image_kwargs),
        tokenizer=standin_tokenizer(),
        video_processor=Gemma4UnifiedVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def write_standin_processor(folder: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json, chat_template.jinja and processor_config.json into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_reference_processor().save_pretrained(str(folder))


def reference_processor(folder: Path):
    """The transformers reference processor loaded back from a folder (``AutoProcessor.from_pretrained``)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder))
