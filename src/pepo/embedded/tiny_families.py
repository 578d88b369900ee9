"""Tiny random VLMs of several families, built offline: :func:`build_tiny_vlm`.

Each family's builder returns ``(config, model class, processor)`` at toy scale: a locally trained
word-level tokenizer with the family's special tokens and chat template (no download), the family's
PIL image processor (no torchvision), and pepo's images-and-text subclass of the family's processor
where the stock one insists on a torchvision video processor (:mod:`pepo.modeling`). The images are
sized so that each becomes **4 image tokens** in every family (one per cell of the synthetic task's
2 x 2 grid, :mod:`pepo.embedded.synthetic`), except LLaVA-OneVision's anyres layout (a base tile, a
resized tile and a newline token per row).

===================  ==========================================  ==============================================
family               model class                                 processor (images and text)
===================  ==========================================  ==============================================
``qwen2_5_vl``       ``Qwen2_5_VLForConditionalGeneration``      the default (:mod:`pepo.embedded.tiny`)
``qwen3_vl``         ``Qwen3VLForConditionalGeneration``         ``Qwen3VLImageTextProcessor``, 16 px patches,
                                                                 one DeepStack merger
``qwen3_5``          ``Qwen3_5ForConditionalGeneration``         the same; a BPE ``Qwen3_5Tokenizer``
``internvl``         ``InternVLForConditionalGeneration``        ``InternVLImageTextProcessor`` (InternVL3)
``gemma3``           ``Gemma3ForConditionalGeneration``          stock ``Gemma3Processor``
``idefics3``         ``Idefics3ForConditionalGeneration``        stock ``Idefics3Processor``
``smolvlm``          ``SmolVLMForConditionalGeneration``         stock ``Idefics3Processor`` (SmolVLM's needs
                                                                 ``num2words`` and torchvision)
``llava_onevision``  ``LlavaOnevisionForConditionalGeneration``  ``LlavaOnevisionImageTextProcessor`` (anyres)
===================  ==========================================  ==============================================

Text hidden size ``hidden_size`` (128), ``num_layers`` (2) decoder layers, a one-layer vision tower
of width 32; random weights. Only the Qwen families get pepo's speed-ups (:mod:`pepo.families`:
Qwen2.5-VL and Qwen3-VL all three, Qwen3.5 image sharing and the position index); the others train
with TRL's and transformers' plain computation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PretrainedConfig, PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from pepo.embedded.synthetic import IMAGE_SIZE, corpus
from pepo.embedded.tiny import (
    CHAT_TEMPLATE, SPECIAL_TOKENS, TAG_TOKENS, build_qwen2_5_vl, build_tokenizer, tiny_generation_config,
)
from pepo.modeling import InternVLImageTextProcessor, LlavaOnevisionImageTextProcessor, Qwen3VLImageTextProcessor

__all__ = ["DEFAULT_FAMILY", "TINY_FAMILIES", "build_tiny_vlm"]

DEFAULT_FAMILY = "qwen2_5_vl"
QWEN3_VL_PATCH = 16  # Qwen3-VL's vision patch (Qwen2.5-VL's is 14)


def qwen3_vl_config(tokenizer, hidden_size: int = 128, num_layers: int = 2) -> Qwen3VLConfig:
    """Qwen3-VL config at toy scale; token ids come from ``tokenizer`` (Qwen's special tokens)."""
    ids = tokenizer.convert_tokens_to_ids
    head_dim = 32
    text_config = {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers, "num_attention_heads": hidden_size // head_dim, "head_dim": head_dim,
        "num_key_value_heads": max(1, hidden_size // head_dim // 2), "max_position_embeddings": 1024,
        # interleaved M-RoPE over head_dim / 2 = 16 frequencies: 6 time, 5 height, 5 width
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5],
                            "mrope_interleaved": True},
        "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>"),
        "tie_word_embeddings": True,
    }
    vision_config = {
        "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": QWEN3_VL_PATCH,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": hidden_size,
        "num_position_embeddings": 16, "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=True,
    )


def qwen3_vl_processor(image_size: int, tokenizer=None) -> Qwen3VLImageTextProcessor:
    """Qwen's tokens and chat template, the Qwen2-VL PIL image processor with 16 px patches (as Qwen3-VL's
    and Qwen3.5's preprocessor configs have) resizing every image to ``image_size`` rounded up to 32 px,
    squared (56 -> 64: 4 x 4 patches, 4 tokens)."""
    side = -(-image_size // (2 * QWEN3_VL_PATCH)) * 2 * QWEN3_VL_PATCH
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": side * side, "longest_edge": side * side}, patch_size=QWEN3_VL_PATCH, merge_size=2,
        temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return Qwen3VLImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer or build_tokenizer(corpus()),
                                     chat_template=CHAT_TEMPLATE)


def qwen3_5_tokenizer():
    """Qwen3.5's own tokenizer class (transformers loads every ``qwen3_5`` checkpoint's tokenizer as
    ``Qwen3_5Tokenizer``, a byte-level BPE, whatever its files name) with a BPE vocabulary trained here
    on the synthetic task's text, Qwen's special tokens and the reward's tags."""
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    backend = Qwen3_5Tokenizer().backend_tokenizer  # its normaliser and pre-tokeniser, an empty vocabulary
    backend.train_from_iterator(corpus(), trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(backend.to_str())["model"]
    tokenizer = Qwen3_5Tokenizer(vocab=trained["vocab"], merges=[tuple(m) for m in trained["merges"]],
                                 eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
                                 chat_template=CHAT_TEMPLATE, model_max_length=1024)
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
    tokenizer.add_tokens(TAG_TOKENS)
    return tokenizer


def build_qwen3_vl(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny Qwen3-VL."""
    processor = qwen3_vl_processor(image_size)
    return qwen3_vl_config(processor.tokenizer, hidden_size, num_layers), Qwen3VLForConditionalGeneration, processor


def build_qwen3_5(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny Qwen3.5 (natively multimodal; its language model
    alternates Gated DeltaNet linear attention and full attention layers): Qwen3-VL's processor,
    tokens and vision sizes (without DeepStack), the last of ``num_layers`` layers full attention."""
    from transformers.models.qwen3_5 import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    processor = qwen3_vl_processor(image_size, qwen3_5_tokenizer())
    qwen3_vl = qwen3_vl_config(processor.tokenizer, hidden_size, num_layers).to_dict()
    text = {key: qwen3_vl["text_config"][key] for key in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "head_dim",
        "num_key_value_heads", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")}
    text.update(layer_types=["linear_attention"] * (num_layers - 1) + ["full_attention"], linear_key_head_dim=16,
                linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                 "mrope_interleaved": True, "partial_rotary_factor": 0.25})
    vision = {key: value for key, value in qwen3_vl["vision_config"].items() if key in (
        "depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size",
        "temporal_patch_size", "out_hidden_size", "num_position_embeddings")}
    tokens = {key: qwen3_vl[key] for key in ("image_token_id", "video_token_id", "vision_start_token_id",
                                             "vision_end_token_id")}
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
    return config, Qwen3_5ForConditionalGeneration, processor


INTERNVL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# InternVL's chat template writes <IMG_CONTEXT> per image; the processor expands it into <img>, 4 placeholders, </img>
INTERNVL_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n")


def internvl_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level, trained here, with InternVL3's special tokens on top of Qwen2's and its chat template."""
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus(), trainer=trainers.WordLevelTrainer(
        special_tokens=[*INTERNVL_SPECIAL_TOKENS, "[UNK]"]))
    backend.add_tokens(TAG_TOKENS[:4])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]",
        padding_side="left", chat_template=INTERNVL_CHAT_TEMPLATE, model_max_length=1024,
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )


def build_internvl(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny InternVL3: InternViT-style tower (14 px patches),
    pixel-shuffle projector, Qwen2 language model; the PIL GOT-OCR2 image processor (one 56 px tile,
    no crops) and :class:`pepo.modeling.InternVLImageTextProcessor`; 4 image tokens per image."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = internvl_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    image_processor = GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, crop_to_patches=False)
    processor = InternVLImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                           image_seq_length=(image_size // 28) ** 2,
                                           chat_template=INTERNVL_CHAT_TEMPLATE)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[image_size, image_size], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=hidden_size // 32, num_key_value_heads=max(1, hidden_size // 64),
                         max_position_embeddings=1024, eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>"), bos_token_id=ids("<|endoftext|>")),
        image_token_id=ids("<IMG_CONTEXT>"), downsample_ratio=0.5, image_seq_length=(image_size // 28) ** 2,
    )
    return config, InternVLForConditionalGeneration, processor


GEMMA3_SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                         "<end_of_image>", "<image_soft_token>"]
# Gemma's turns, with a system turn as the Qwen template's; each image is written <start_of_image>, which the
# processor expands into <start_of_image>, 4 x <image_soft_token>, <end_of_image>
GEMMA3_CHAT_TEMPLATE = (
    "<bos>{% if messages[0]['role'] != 'system' %}<start_of_turn>system\nYou are a helpful assistant .<end_of_turn>\n"
    "{% endif %}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<start_of_image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny Gemma3: SigLIP tower (14 px patches), the
    projector's average pooling to 4 image tokens per image, Gemma3 language model (sliding and global
    attention); the PIL Gemma3 image processor and the stock ``Gemma3Processor`` (it has no video
    processor); word-level tokenizer with Gemma's turn and image tokens."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus(), trainer=trainers.WordLevelTrainer(
        special_tokens=[*GEMMA3_SPECIAL_TOKENS, "<unk>"]))
    backend.add_tokens(TAG_TOKENS[:4])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<end_of_turn>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", chat_template=GEMMA3_CHAT_TEMPLATE, model_max_length=1024,
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )
    ids = tokenizer.convert_tokens_to_ids
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4, chat_template=GEMMA3_CHAT_TEMPLATE)
    config = Gemma3Config(
        text_config={"model_type": "gemma3_text", "vocab_size": len(tokenizer), "hidden_size": hidden_size,
                     "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers, "head_dim": 32,
                     "num_attention_heads": hidden_size // 32, "num_key_value_heads": max(1, hidden_size // 64),
                     "max_position_embeddings": 1024, "sliding_window": 16, "bos_token_id": ids("<bos>"),
                     "eos_token_id": ids("<end_of_turn>"), "pad_token_id": ids("<pad>")},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": image_size, "patch_size": 14},
        mm_tokens_per_image=4, image_token_index=ids("<image_soft_token>"), boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
    )
    return config, Gemma3ForConditionalGeneration, processor


IDEFICS3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                           "<image>", "<global-img>"]
# SmolVLM's turns ("User:" ... "<end_of_utterance>"), each image written <image> for the processor to expand
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% if messages[0]['role'] != 'system' %}System: You are a helpful assistant .<end_of_utterance>\n"
    "{% endif %}{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>{% elif content['type'] == 'text' %} {{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _build_idefics3(hidden_size: int, num_layers: int, image_size: int, smolvlm: bool):
    """A tiny Idefics3 or SmolVLM (the same layout: SigLIP tower, pixel-shuffle connector by 2, Llama
    language model) with the stock ``Idefics3Processor`` (one 56 px image, no splitting: ``<fake_token_around_image>
    <global-img>``, 4 ``<image>``, ``<fake_token_around_image>``). SmolVLM's own processor needs the
    ``num2words`` package and a torchvision video processor; for images it formats prompts as Idefics3's."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator([*corpus(), "System User Assistant :"], trainer=trainers.WordLevelTrainer(
        special_tokens=[*IDEFICS3_SPECIAL_TOKENS, "[UNK]"]))
    backend.add_tokens(TAG_TOKENS[:4])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<end_of_utterance>", pad_token="<|endoftext|>", unk_token="[UNK]",
        padding_side="left", chat_template=IDEFICS3_CHAT_TEMPLATE, model_max_length=1024)
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                                max_image_size={"longest_edge": image_size})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=(image_size // 28) ** 2, chat_template=IDEFICS3_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=14)
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers,
            "num_attention_heads": hidden_size // 32, "num_key_value_heads": max(1, hidden_size // 64),
            "max_position_embeddings": 1024, "bos_token_id": ids("<|im_start|>"),
            "eos_token_id": ids("<end_of_utterance>"), "pad_token_id": ids("<|endoftext|>")}
    if smolvlm:
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

        config = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2, image_token_id=ids("<image>"))
        return config, SmolVLMForConditionalGeneration, processor
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, image_token_id=ids("<image>"))
    return config, Idefics3ForConditionalGeneration, processor


def build_idefics3(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny Idefics3 (:func:`_build_idefics3`)."""
    return _build_idefics3(hidden_size, num_layers, image_size, smolvlm=False)


def build_smolvlm(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny SmolVLM (:func:`_build_idefics3`)."""
    return _build_idefics3(hidden_size, num_layers, image_size, smolvlm=True)


def build_llava_onevision(hidden_size: int, num_layers: int, image_size: int):
    """``(config, model class, processor)`` of a tiny LLaVA-OneVision: SigLIP tower on 28 px tiles
    (2 x 2 patches of 14 px), MLP projector, Qwen2 language model; anyres with one 28 px grid
    pinpoint (the base tile and one resized tile, a newline token per row of patches);
    :class:`pepo.modeling.LlavaOnevisionImageTextProcessor` with the PIL image processor."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tile = 28
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus(), trainer=trainers.WordLevelTrainer(
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "[UNK]"]))
    backend.add_tokens(TAG_TOKENS[:4])
    template = CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]",
        padding_side="left", chat_template=template, model_max_length=1024)
    ids = tokenizer.convert_tokens_to_ids
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile},
                                                      image_grid_pinpoints=[[tile, tile]])
    processor = LlavaOnevisionImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=(tile // 14) ** 2,
        vision_feature_select_strategy="full", chat_template=template)
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": tile, "patch_size": 14},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": hidden_size,
                     "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers,
                     "num_attention_heads": hidden_size // 32, "num_key_value_heads": max(1, hidden_size // 64),
                     "max_position_embeddings": 1024, "eos_token_id": ids("<|im_end|>"),
                     "pad_token_id": ids("<|endoftext|>"), "bos_token_id": ids("<|endoftext|>")},
        image_token_index=ids("<image>"), video_token_index=ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=[[tile, tile]],
    )
    return config, LlavaOnevisionForConditionalGeneration, processor


Builder = Callable[[int, int, int], tuple[PretrainedConfig, type, object]]
#: family name -> builder ``(hidden_size, num_layers, image_size) -> (config, model class, processor)``
TINY_FAMILIES: dict[str, Builder] = {
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "qwen3_5": build_qwen3_5,
    "internvl": build_internvl,
    "gemma3": build_gemma3,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
    "llava_onevision": build_llava_onevision,
}


def build_tiny_vlm(
    output_dir: str | Path, seed: int = 0, *, family: str = DEFAULT_FAMILY, hidden_size: int = 128,
    num_layers: int = 2, image_size: int = IMAGE_SIZE,
) -> Path:
    """Build a tiny VLM of ``family`` (one of :data:`TINY_FAMILIES`; random weights from ``seed``)
    and save it to ``output_dir`` as a complete checkpoint (config, weights, generation config,
    tokenizer and processor files), the files a download of that family has.

    Reload it like any checkpoint: ``pepo.modeling.load_model_and_processor(output_dir)``; it also
    loads in plain transformers (``AutoModelForImageTextToText``). Returns ``output_dir`` as a ``Path``.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"build_tiny_vlm: family={family!r} is not one of {sorted(TINY_FAMILIES)}")
    output_dir = Path(output_dir)
    config, model_class, processor = TINY_FAMILIES[family](hidden_size, num_layers, image_size)
    torch.manual_seed(seed)
    model = model_class(config).float()
    model.generation_config = tiny_generation_config(config)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
