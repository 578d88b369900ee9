"""A tiny InternVL3 checkpoint, built from config with its own tokenizer (no hub, no weights).

InternVL3's layout at toy scale: ``InternVLForConditionalGeneration`` (InternViT-style vision tower,
pixel-shuffle projector, Qwen2 language model); InternVL3's special tokens (``<img>``, ``</img>``,
``<IMG_CONTEXT>``, ``<video>`` on top of Qwen2's ``<|im_start|>`` / ``<|im_end|>``), a word-level
vocabulary trained on the synthetic task's text (:mod:`pepo.embedded`), and InternVL's chat
template, which writes ``<IMG_CONTEXT>`` per image for the processor to expand into
``<img>`` + ``image_seq_length`` placeholders + ``</img>``. The processor is
:class:`pepo.modeling.InternVLImageTextProcessor` (InternVL's, without the torchvision video
processor) with the PIL GOT-OCR2 image processor InternVL uses. Nothing here tells PEPO which
token is the image placeholder: it must find ``<IMG_CONTEXT>`` itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GenerationConfig, InternVLConfig, InternVLForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from pepo.embedded.synthetic import IMAGE_SIZE, corpus
from pepo.modeling import InternVLImageTextProcessor

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]  # not special: the reward parses them
IMAGE_SEQ_LENGTH = 4  # 56 px / 14 px patches = 4 x 4, pixel-shuffled by 0.5: 4 tokens per tile
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant .<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus(), trainer=trainers.WordLevelTrainer(special_tokens=[*SPECIAL_TOKENS, "[UNK]"]))
    backend.add_tokens(TAG_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]",
        padding_side="left", chat_template=CHAT_TEMPLATE, model_max_length=1024,
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )


def build_tiny_internvl(output_dir: str | Path, seed: int = 0) -> Path:
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    image_processor = GotOcr2ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_to_patches=False)
    processor = InternVLImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                           image_seq_length=IMAGE_SEQ_LENGTH, chat_template=CHAT_TEMPLATE)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>"), bos_token_id=ids("<|endoftext|>")),
        image_token_id=ids("<IMG_CONTEXT>"), downsample_ratio=0.5, image_seq_length=IMAGE_SEQ_LENGTH,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).float()
    model.generation_config = GenerationConfig(eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
                                               do_sample=True, temperature=1.0, top_p=1.0)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
