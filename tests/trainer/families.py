"""Tiny random VLMs of every family PEPO detects image tokens for, built offline from configs.

Each builder returns ``(model, processor, text)`` where ``text`` holds the family's image marker
as a user would write it; the processor expands it into the model's placeholder run. Tokenizers
are word-level, built here with ``tokenizers``; processors use the PIL image processors (no
torchvision). InternVL's and SmolVLM's processors insist on a video processor, which needs
torchvision, so :class:`_NoVideo` lets them be built without one (images only).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = ["hello", "look", "at", "this", "picture", "what", "is", "it", "?", "\n", "user", "assistant"]


def word_tokenizer(special: list[str], extra_special_tokens: dict | None = None, **kwargs) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<unk>", "<pad>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens=extra_special_tokens or {}, **kwargs,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    return tokenizer


def _no_video(processor_cls):
    class _NoVideo(processor_cls):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return _NoVideo


def _tiny_text(**overrides) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, **overrides)


def qwen2_vl(version: str = "2.5"):
    from pepo.modeling import QwenVLImageTextProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    special = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = word_tokenizer(special)
    ids = tokenizer.convert_tokens_to_ids
    processor = QwenVLImageTextProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56), tokenizer=tokenizer
    )
    text_config = _tiny_text(vocab_size=len(tokenizer), rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})
    token_ids = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                     vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    if version == "2.5":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        config = Qwen2_5_VLConfig(
            text_config=text_config, **token_ids,
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                               fullatt_block_indexes=[0], window_size=56),
        )
        model = Qwen2_5_VLForConditionalGeneration(config)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        config = Qwen2VLConfig(
            text_config=text_config, **token_ids,
            vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        )
        model = Qwen2VLForConditionalGeneration(config)
    return model, processor, "look at <|vision_start|><|image_pad|><|vision_end|> what is it ?"


def internvl3():
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    special = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tokenizer = word_tokenizer(special, extra_special_tokens={
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    })
    ids = tokenizer.convert_tokens_to_ids
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=False)
    processor = _no_video(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                             video_processor=None, image_seq_length=4)
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[56, 56], patch_size=[14, 14]),
        text_config={"model_type": "qwen2", **_tiny_text(vocab_size=len(tokenizer))},
        image_token_id=ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
    )
    return InternVLForConditionalGeneration(config), processor, "look at <IMG_CONTEXT> what is it ?"


def llava():
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = word_tokenizer(["<image>"])
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                       "projection_dim": 32},
        text_config={"model_type": "llama", **_tiny_text(vocab_size=len(tokenizer))},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return LlavaForConditionalGeneration(config), processor, "look at <image> what is it ?"


def idefics3(smol: bool = False):
    special = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
    tokenizer = word_tokenizer(special)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=56, patch_size=14)
    text = {"model_type": "llama", **_tiny_text(vocab_size=len(tokenizer))}
    image_kwargs = dict(do_image_splitting=False, size={"longest_edge": 56}, max_image_size={"longest_edge": 56})
    token_id = tokenizer.convert_tokens_to_ids("<image>")
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    # SmolVLM's own processor needs the num2words package (for video prompts) and formats prompts the
    # same way as Idefics3's for images, so the SmolVLM model is driven by the Idefics3 processor.
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**image_kwargs), tokenizer=tokenizer,
                                  image_seq_len=4)
    if smol:
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

        config = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2, image_token_id=token_id)
        return SmolVLMForConditionalGeneration(config), processor, "look at <image> what is it ?"
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, image_token_id=token_id)
    return Idefics3ForConditionalGeneration(config), processor, "look at <image> what is it ?"


def gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    special = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = word_tokenizer(special, extra_special_tokens={
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    })
    ids = tokenizer.convert_tokens_to_ids
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 28, "width": 28}),
                                tokenizer=tokenizer, image_seq_length=4)
    config = Gemma3Config(
        text_config={"model_type": "gemma3_text", **_tiny_text(vocab_size=len(tokenizer)), "head_dim": 8,
                     "sliding_window": 16},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4, image_token_index=ids("<image_soft_token>"), boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
    )
    return Gemma3ForConditionalGeneration(config), processor, "look at <start_of_image> what is it ?"


# family name -> builder of a tiny random model of it: () -> (model, processor, text)
TINY_BUILDERS = {
    "qwen2_vl": lambda: qwen2_vl("2"),
    "qwen2_5_vl": lambda: qwen2_vl("2.5"),
    "internvl3": internvl3,
    "llava": llava,
    "idefics3": idefics3,
    "smolvlm": lambda: idefics3(smol=True),
    "gemma3": gemma3,
}


def build(name: str):
    torch.manual_seed(0)
    model, processor, text = TINY_BUILDERS[name]()
    return model.eval(), processor, text
