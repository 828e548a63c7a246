"""Processing layer: images, audio, video and chat prompts → numpy arrays for the model (never imports mlx)."""

from .audio import FRAME, MAX_CLIP_FRAMES, SAMPLE_RATE, ProcessedAudio, load_audio, process_audio
from .image import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_PIXELS,
    SUPPORTED_BUDGETS,
    ProcessedImage,
    load_image,
    num_soft_tokens,
    process_image,
    target_size,
)
from .modalities import ARRAY_KEYS, MODALITIES, Modality
from .processor import ModelInputs, Processor, ProcessorConfig
from .prompt import SpecialTokens, load_tokenizer, read_special_tokens
from .video import ProcessedVideo, VideoOptions, process_video

__all__ = [
    "ARRAY_KEYS",
    "MODALITIES",
    "Modality",
    "ProcessedVideo",
    "VideoOptions",
    "process_video",
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_PIXELS",
    "FRAME",
    "MAX_CLIP_FRAMES",
    "SAMPLE_RATE",
    "SUPPORTED_BUDGETS",
    "ModelInputs",
    "ProcessedAudio",
    "ProcessedImage",
    "Processor",
    "ProcessorConfig",
    "SpecialTokens",
    "load_audio",
    "load_image",
    "load_tokenizer",
    "num_soft_tokens",
    "process_audio",
    "process_image",
    "read_special_tokens",
    "target_size",
]
