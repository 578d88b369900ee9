"""The model families the paper's recipes name, as config dicts (no hub, no weights).

Values are copied by hand from the public ``config.json`` / ``tokenizer.json`` of
Qwen/Qwen2.5-VL-3B-Instruct and OpenGVLab/InternVL3-2B-hf (the transformers-format InternVL3). Only
what the tests need: the architecture sizes (so that a model built on the meta device has the
published parameter count) and the ids of the image placeholder tokens.
"""

from __future__ import annotations

from typing import NamedTuple

QWEN2_5_VL_3B = {
    "model_type": "qwen2_5_vl",
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
    "text_config": {
        "model_type": "qwen2_5_vl_text", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
        "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31], "in_chans": 3, "hidden_act": "silu",
    },
}

INTERNVL3_2B = {
    "model_type": "internvl",
    "image_token_id": 151667,
    "downsample_ratio": 0.5,
    "image_seq_length": 256,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,  # an untied lm_head (151674 x 1536): without it the count is 0.23 B short
    "text_config": {
        "model_type": "qwen2", "vocab_size": 151674, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "internvl_vision", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "image_size": [448, 448], "patch_size": [14, 14], "norm_type": "layer_norm",
        "use_qk_norm": False, "layer_scale_init_value": 0.1, "use_mean_pooling": True,
    },
}

class PaperFamily(NamedTuple):
    """A model family a paper recipe names, as the tests need it."""

    config: dict  # the config.json fields (architecture sizes, image token ids)
    model_class: str  # its transformers class name
    placeholder: str  # the image placeholder token
    token_ids: dict[str, int]  # the placeholder and the tokens around it
    billions: tuple[float, float]  # published size in billions of parameters, a (low, high) bracket


# name in the recipe's model path -> the family (tests/trainer/families.py builds tiny random models instead)
PAPER_FAMILIES = {
    "Qwen2.5-VL-3B": PaperFamily(QWEN2_5_VL_3B, "Qwen2_5_VLForConditionalGeneration", "<|image_pad|>",
                                 {"<|image_pad|>": 151655, "<|vision_start|>": 151652, "<|vision_end|>": 151653},
                                 (3.6, 3.9)),
    "InternVL3-2B": PaperFamily(INTERNVL3_2B, "InternVLForConditionalGeneration", "<IMG_CONTEXT>",
                                {"<img>": 151665, "</img>": 151666, "<IMG_CONTEXT>": 151667}, (2.0, 2.2)),
}


class FamilyVocabulary:
    """The slice of a family's tokenizer the image-token resolver reads (``convert_tokens_to_ids``
    for the multimodal special tokens); any other token is unknown."""

    unk_token, unk_token_id = "<unk>", -1

    def __init__(self, ids: dict[str, int]):
        self.ids = ids

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.ids.get(token, self.unk_token_id)


def family_of(model_name_or_path: str) -> str:
    """The key of :data:`PAPER_FAMILIES` a recipe's model path names (e.g. ``/path/to/InternVL3-2B-hf``)."""
    found = [name for name in PAPER_FAMILIES if name in model_name_or_path]
    if len(found) != 1:
        raise ValueError(f"model_name_or_path={model_name_or_path!r} names none (or several) of {sorted(PAPER_FAMILIES)}")
    return found[0]
