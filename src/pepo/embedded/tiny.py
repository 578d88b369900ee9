"""The embedded tiny VLM: a real Qwen2.5-VL, small enough to train on a laptop CPU in minutes.

:func:`pepo.embedded.build_tiny_vlm` (default family ``qwen2_5_vl``, built here) writes a complete checkpoint directory, the same files a Qwen2.5-VL-3B
download has (``config.json``, ``model.safetensors``, ``generation_config.json``, tokenizer and
processor files), so every code path that serves the real model (processor, image-token expansion,
TRL's VLM handling, generation, PEPO's hidden-state capture) runs on it unchanged:

* model: ``Qwen2_5_VLForConditionalGeneration`` from config, text hidden 128, 2 decoder layers,
  tied embeddings, a one-block vision tower (388,992 parameters in all: ``benchmarks/model_sizes.py``),
  random weights;
* image processor: ``Qwen2VLImageProcessorPil`` with min = max pixels = 56 x 56, so every image
  becomes 4 x 4 patches of 14 px, merged 2 x 2 into **4 image tokens** (one per grid cell of
  the synthetic task, :mod:`pepo.embedded.synthetic`);
* tokenizer: word-level, trained here with the ``tokenizers`` library on the synthetic task's text,
  with the Qwen special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``,
  ``<|image_pad|>``, ...) and a Qwen-style chat template;
* processor: :class:`pepo.modeling.QwenVLImageTextProcessor` (no torchvision video processor),
  saved under the stock ``Qwen2_5_VLProcessor`` name with a video processor config, so the
  directory loads in plain transformers like a Qwen2.5-VL download.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast
from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from pepo.embedded.synthetic import IMAGE_SIZE, corpus
from pepo.modeling import QwenVLImageTextProcessor

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_processor", "build_qwen2_5_vl", "build_tokenizer"]

# Qwen2-VL's special tokens, in Qwen's order (ids differ: this vocabulary is tiny).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Not special (they must survive decoding with skip_special_tokens=True): the reward parses them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<image>"]
UNK = "[UNK]"

# Qwen2-VL's chat template, minus tools and video, with its default system turn. The system turn
# matters here: without it the image tokens are the first content tokens of every prompt, and the
# warm start turned them into a constant, image-independent block (the vision features grew in norm
# while staying alike over images) and did not learn to see (an early observation, not a committed run).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant .<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on ``texts`` (words and runs of punctuation)."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=[*SPECIAL_TOKENS, UNK], min_frequency=1)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens(TAG_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=UNK,
        padding_side="left",  # generation pads on the left, as Qwen's tokenizer config does
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )


def build_processor(tokenizer: PreTrainedTokenizerFast, image_size: int = IMAGE_SIZE) -> QwenVLImageTextProcessor:
    """Processor whose image processor resizes every image to ``image_size`` squared pixels."""
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    return QwenVLImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def tiny_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 128, num_layers: int = 2) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL config at toy scale; token ids come from ``tokenizer``."""
    ids = tokenizer.convert_tokens_to_ids
    head_dim = 32
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": hidden_size // head_dim,
        "num_key_value_heads": max(1, hidden_size // head_dim // 2),
        "max_position_embeddings": 1024,
        # M-RoPE splits head_dim / 2 frequencies over (time, height, width): 4 + 6 + 6 = 16.
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
        "tie_word_embeddings": True,
    }
    vision_config = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [0],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def tiny_generation_config(config) -> GenerationConfig:
    """Sampling at temperature 1 (GRPO's rollouts), ending at the config's eos token."""
    text = config.get_text_config()
    return GenerationConfig(eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
                            bos_token_id=text.bos_token_id, do_sample=True, temperature=1.0, top_p=1.0)


def build_qwen2_5_vl(hidden_size: int, num_layers: int, image_size: int):
    """``(model config, model class, processor)`` of the tiny Qwen2.5-VL (:func:`pepo.embedded.build_tiny_vlm`'s
    default family)."""
    tokenizer = build_tokenizer(corpus())
    return tiny_config(tokenizer, hidden_size, num_layers), Qwen2_5_VLForConditionalGeneration, \
        build_processor(tokenizer, image_size)
