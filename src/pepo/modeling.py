"""Loading vision-language models and their processors from local checkpoints.

One function, :func:`load_model_and_processor`, loads any local Hugging Face VLM checkpoint
(a real Qwen2.5-VL-3B or the embedded tiny model of :mod:`pepo.embedded`) the same way:
``AutoModelForImageTextToText`` + ``AutoProcessor``, never touching the network.

It also defines :class:`QwenVLImageTextProcessor`, the Qwen2-VL family processor without a video
processor. The stock ``Qwen2_5_VLProcessor`` insists on a video processor, and the Qwen2-VL video
processor imports torchvision, which does not work on every machine (it does not on the CPU
machines this project is tested on). Images-only training never needs it. A directory saved with
it names the stock ``Qwen2_5_VLProcessor`` (and holds a video processor config), so it loads in
plain transformers like any Qwen2.5-VL download; :func:`load_processor` reads such a checkpoint back
as the subclass. Pass the processor to TRL as ``processing_class``: resolving it itself, TRL would
build the stock class (and need torchvision).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.models.internvl.processing_internvl import InternVLProcessor
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

from pepo.families import family_of
from pepo.families.image_rows import image_rows
from pepo.mrope import vectorise_rope_index
from pepo.versions import require_signature, signature_matches

__all__ = [
    "InternVLImageTextProcessor", "LlavaOnevisionImageTextProcessor", "Qwen3VLImageTextProcessor", "QwenVLImageTextProcessor", "freeze_vision", "image_size_check", "is_peft_model",
    "load_model_and_processor", "load_processor",
]


# transformers 5.24's methods that the processors below bypass (__init__) or call with these names
# (validate_inputs): a change refuses to build the processor, one line
_BYPASSED = {
    Qwen2_5_VLProcessor: {"__init__": ("self", "image_processor", "tokenizer", "video_processor", "chat_template",
                                       "**kwargs"),
                          "validate_inputs": ("self", "images", "text", "videos", "audio", "**kwargs")},
    InternVLProcessor: {"__init__": ("self", "image_processor", "tokenizer", "video_processor", "image_seq_length",
                                     "chat_template", "**kwargs"),
                        "validate_inputs": ("self", "images", "text", "videos", "**kwargs")},
    Qwen3VLProcessor: {"__init__": ("self", "image_processor", "tokenizer", "video_processor", "chat_template",
                                    "**kwargs"),
                       "validate_inputs": ("self", "images", "text", "videos", "audio", "**kwargs")},
    LlavaOnevisionProcessor: {"__init__": ("self", "image_processor", "tokenizer", "video_processor", "num_image_tokens",
                                           "vision_feature_select_strategy", "chat_template", "image_token",
                                           "video_token", "vision_aspect_ratio", "**kwargs"),
                              "validate_inputs": ("self", "images", "text", "videos", "audio", "**kwargs")},
}
# the methods QwenVLImageTextProcessor's image cache overrides or calls: a change leaves the cache and the
# token-type lookup out (transformers' own methods run), one warning
_CACHE_METHODS = {"_process_images": ("self", "images", "**kwargs"),
                  "replace_image_token": ("self", "image_inputs", "image_idx", "**kwargs"),
                  "create_mm_token_type_ids": ("self", "input_ids")}


def _check_bypassed(processor_class: type, patch: str) -> None:
    for name, expected in _BYPASSED[processor_class].items():
        require_signature(f"{patch} ({processor_class.__name__}.{name})", getattr(processor_class, name), expected)


@functools.cache
def _cache_methods_match() -> bool:
    return all(signature_matches("modeling.QwenVLImageTextProcessor", getattr(Qwen2_5_VLProcessor, name), expected)
               for name, expected in _CACHE_METHODS.items())


def _refuse_videos(processor, videos) -> None:
    # ProcessorMixin.__call__ silently skips videos when there is no video processor: refuse.
    if videos is not None:
        raise ValueError(
            f"{type(processor).__name__} handles images and text only; load the stock processor "
            "(which needs torchvision) to process videos."
        )


class _SavedAsStockProcessor:
    """Saves a pepo processor subclass under the transformers class it subclasses (``stock``), with a
    ``video_processor`` entry built from the image processor's settings, as a download of that model
    has: the checkpoint then loads in plain transformers without pepo (``AutoProcessor`` gives the
    stock class, whose video processor needs torchvision, as for any Qwen2.5-VL or InternVL
    checkpoint), and :func:`load_processor` reads it back as the pepo class."""

    stock: type[ProcessorMixin]
    video_processor_type: str
    video_settings: tuple[str, ...] = ("image_mean", "image_std", "do_convert_rgb", "do_normalize", "do_rescale",
                                        "rescale_factor", "do_resize", "resample")

    def to_dict(self) -> dict:
        output = super().to_dict()
        output["processor_class"] = self.stock.__name__
        image = self.image_processor.to_dict()
        video = {key: image[key] for key in self.video_settings if key in image}
        output["video_processor"] = {"video_processor_type": self.video_processor_type, **video}
        return output

    def validate_inputs(self, images=None, text=None, videos=None, **kwargs):
        _refuse_videos(self, videos)  # images and text only: no video processor was built
        return super().validate_inputs(images=images, text=text, videos=videos, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        # ProcessorMixin stamped the tokenizer's config with type(self).__name__: stamp the stock class instead
        self.tokenizer._set_processor_class(self.stock.__name__)
        self.tokenizer.save_pretrained(save_directory)
        return files


class QwenVLImageTextProcessor(_SavedAsStockProcessor, Qwen2_5_VLProcessor):
    """Qwen2-VL / Qwen2.5-VL processor for images and text only (no video processor).

    Same prompt expansion as ``Qwen2_5_VLProcessor`` (each ``<|image_pad|>`` becomes
    ``grid_t * grid_h * grid_w / merge_size**2`` copies and ``mm_token_type_ids`` marks them), but
    its ``__init__`` takes only the image processor and the tokenizer, so loading it never builds
    the torchvision-dependent video processor. Passing ``videos=`` raises. Saved as
    ``Qwen2_5_VLProcessor`` (:class:`_SavedAsStockProcessor`).
    """

    stock = Qwen2_5_VLProcessor
    video_processor_type = "Qwen2VLVideoProcessor"
    video_settings = (*_SavedAsStockProcessor.video_settings, "patch_size", "temporal_patch_size", "merge_size")

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # Same token bookkeeping as Qwen2_5_VLProcessor.__init__, minus the video processor
        # (its __init__ would pass video_processor to ProcessorMixin, which wants one per attribute).
        _check_bypassed(Qwen2_5_VLProcessor, "modeling.QwenVLImageTextProcessor")
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    #: bytes of preprocessed images kept per processor (least recently used dropped first); 0 turns the cache off
    image_cache_bytes: int = 256 * 2**20

    def _process_images(self, images, **kwargs):
        """The image processor's output, computed once per distinct image and then reused.

        GRPO preprocesses each prompt's image for every one of its ``num_generations`` rows, and
        TRL does it twice per step (to generate, then for the loss): the demo's 32 images per step
        went through the image processor 512 times. The Qwen2-VL image processor treats each image
        on its own and concatenates (``pixel_values`` rows, one ``image_grid_thw`` row per image),
        so the images not yet cached go through it in one call, its output is split per image,
        and the batch is the concatenation of the per-image parts: the very same tensors. Keyed by
        pixel content (images decoded anew from a dataset are new objects) and the settings."""
        flat = make_flat_list_of_images(images)
        if self.image_cache_bytes <= 0 or not _cache_methods_match() or not flat or not all(isinstance(image, Image.Image) for image in flat):
            return super()._process_images(images, **kwargs)
        cache = _IMAGE_CACHES.setdefault(self, _ImageCache())
        settings = repr(sorted(kwargs.items()))
        keys = [cache.key(image, settings) for image in flat]
        parts = {key: cache.get(key) for key in keys}
        missing = {key: image for key, image in zip(keys, flat) if parts[key] is None}
        if missing:
            fresh = _split_per_image(self.image_processor(list(missing.values()), **kwargs), len(missing))
            if fresh is None:  # an output this split does not know: no caching
                return super()._process_images(images, **kwargs)
            for key, part in zip(missing, fresh):
                parts[key] = (part, self.replace_image_token(part, image_idx=0, **kwargs))
                cache.put(key, parts[key], self.image_cache_bytes)
        ordered = [parts[key] for key in keys]
        processed = BatchFeature({name: _concatenate([part[name] for part, _ in ordered]) for name in ordered[0][0]})
        return processed, [replacement for _, replacement in ordered]

    def create_mm_token_type_ids(self, input_ids: list) -> list[list[int]]:
        """ProcessorMixin's modality ids (0 text, 1 image, 2 video, 3 audio per token), by one dict
        lookup per token instead of three ``np.isin`` calls per row (the largest cost of a cached call)."""
        if not _cache_methods_match():
            return super().create_mm_token_type_ids(input_ids)
        types = {}
        for modality, ids in ((1, self.image_token_ids), (2, self.video_token_ids), (3, self.audio_token_ids)):
            types.update(dict.fromkeys(ids or (), modality))  # later modalities win, as in ProcessorMixin
        rows = (row if isinstance(row, list) else row.tolist() for row in input_ids)
        return [[types.get(token, 0) for token in row] for row in rows]


def _concatenate(values: list):
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)
    if isinstance(values[0], np.ndarray):
        return np.concatenate(values)
    return [item for value in values for item in value]


def _split_per_image(processed, n_images: int) -> list[dict] | None:
    """Qwen2-VL image processor output for ``n_images`` images -> one output per image: ``pixel_values``
    rows go by :func:`~pepo.families.image_rows.image_rows`, every per-image field by one row. None for anything
    else."""
    grid = processed.get("image_grid_thw")
    if grid is None or len(grid) != n_images:
        return None
    rows = image_rows(grid)
    parts: list[dict] = [{} for _ in range(n_images)]
    for name, value in processed.items():
        if len(value) == (rows[-1].stop if rows else 0) and name == "pixel_values":
            pieces = [value[r.start : r.stop] for r in rows]
        elif len(value) == n_images:
            pieces = [value[i : i + 1] for i in range(n_images)]
        else:
            return None
        for part, piece in zip(parts, pieces):
            if isinstance(piece, (torch.Tensor, np.ndarray)):
                piece = piece.clone() if isinstance(piece, torch.Tensor) else piece.copy()  # views would pin the batch
            part[name] = piece
    return parts


class _ImageCache:
    """LRU map (settings, image mode, size, pixel digest) -> (one image's processor output, its
    placeholder text), bounded in bytes."""

    def __init__(self):
        self.entries: OrderedDict[tuple, tuple[tuple[dict, str], int]] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def key(image: Image.Image, settings: str) -> tuple:
        return settings, image.mode, image.size, hashlib.blake2b(image.tobytes(), digest_size=16).digest()

    def get(self, key: tuple) -> tuple[dict, str] | None:
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key][0]

    def put(self, key: tuple, value: tuple[dict, str], max_bytes: int) -> None:
        size = sum(v.nbytes if isinstance(v, (torch.Tensor, np.ndarray)) else 64 for v in value[0].values())
        self.entries[key] = (value, size)
        self.bytes += size
        while self.bytes > max_bytes and self.entries:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.bytes -= dropped


# Outside the processor's __dict__: ProcessorMixin.to_dict deep-copies that, and DataLoader workers pickle it.
_IMAGE_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class InternVLImageTextProcessor(_SavedAsStockProcessor, InternVLProcessor):
    """InternVL3 processor for images and text only (no video processor), for the same reason as
    :class:`QwenVLImageTextProcessor`: the stock ``InternVLProcessor`` builds a torchvision video
    processor. Same prompt expansion: each ``<IMG_CONTEXT>`` becomes ``<img>``, ``image_seq_length``
    placeholders per tile, ``</img>``. Saved as ``InternVLProcessor``."""

    stock = InternVLProcessor
    video_processor_type = "InternVLVideoProcessor"

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs):
        _check_bypassed(InternVLProcessor, "modeling.InternVLImageTextProcessor")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        # InternVLProcessor.__init__'s token bookkeeping, minus the video processor
        self.image_seq_length = image_seq_length
        self.start_image_token, self.end_image_token = tokenizer.start_image_token, tokenizer.end_image_token
        self.start_image_token_id = tokenizer.start_image_token_id
        self.end_image_token_id = tokenizer.end_image_token_id
        self.image_token, self.image_token_id = tokenizer.context_image_token, tokenizer.context_image_token_id
        self.video_token = tokenizer.video_token
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})"
        )


class Qwen3VLImageTextProcessor(_SavedAsStockProcessor, Qwen3VLProcessor):
    """Qwen3-VL processor for images and text only (no video processor), for the same reason as
    :class:`QwenVLImageTextProcessor`: the stock ``Qwen3VLProcessor`` builds a torchvision video
    processor. Same prompt expansion: each ``<|image_pad|>`` becomes ``grid_t * grid_h * grid_w /
    merge_size**2`` copies, marked in ``mm_token_type_ids``. Saved as ``Qwen3VLProcessor``. (Unlike
    :class:`QwenVLImageTextProcessor` it keeps no cache of preprocessed images.)"""

    stock = Qwen3VLProcessor
    video_processor_type = "Qwen3VLVideoProcessor"
    video_settings = (*_SavedAsStockProcessor.video_settings, "patch_size", "temporal_patch_size", "merge_size")

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # Qwen3VLProcessor.__init__'s token bookkeeping, minus the video processor
        _check_bypassed(Qwen3VLProcessor, "modeling.Qwen3VLImageTextProcessor")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        for kind in ("image", "video"):
            token = getattr(tokenizer, f"{kind}_token", None) or f"<|{kind}_pad|>"
            setattr(self, f"{kind}_token", token)
            setattr(self, f"{kind}_token_id", getattr(tokenizer, f"{kind}_token_id", None)
                    or tokenizer.convert_tokens_to_ids(token))
        for end in ("start", "end"):
            token = getattr(tokenizer, f"vision_{end}_token", None) or f"<|vision_{end}|>"
            setattr(self, f"vision_{end}_token", token)
            setattr(self, f"vision_{end}_token_id", getattr(tokenizer, f"vision_{end}_token_id", None)
                    or tokenizer.convert_tokens_to_ids(token))


class LlavaOnevisionImageTextProcessor(_SavedAsStockProcessor, LlavaOnevisionProcessor):
    """LLaVA-OneVision processor for images and text only (no video processor), for the same reason as
    :class:`QwenVLImageTextProcessor`: the stock ``LlavaOnevisionProcessor`` builds a torchvision video
    processor. Same prompt expansion (each ``<image>`` becomes the anyres count of placeholders). Saved
    as ``LlavaOnevisionProcessor``."""

    stock = LlavaOnevisionProcessor
    video_processor_type = "LlavaOnevisionVideoProcessor"

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>", video_token="<video>",
                 vision_aspect_ratio="anyres_max_9", **kwargs):
        _check_bypassed(LlavaOnevisionProcessor, "modeling.LlavaOnevisionImageTextProcessor")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        # LlavaOnevisionProcessor.__init__'s token bookkeeping, minus the video processor
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.vision_aspect_ratio = vision_aspect_ratio
        for kind, default in (("image", image_token), ("video", video_token)):
            token = getattr(tokenizer, f"{kind}_token", None) or default
            setattr(self, f"{kind}_token", token)
            setattr(self, f"{kind}_token_id", getattr(tokenizer, f"{kind}_token_id", None)
                    or tokenizer.convert_tokens_to_ids(token))


class _QwenVLImageTextProcessorKey(PretrainedConfig):
    """Registry key only: ``AutoProcessor.register`` wants a config class, and registering under
    the real Qwen2-VL configs would replace the stock processor for every Qwen2-VL checkpoint.
    Checkpoints pepo saved before its processors were saved under the stock names have a
    ``processor_config.json`` naming ``QwenVLImageTextProcessor``, which AutoProcessor then finds
    among the registered classes by name (e.g. the warm starts under ``~/.cache/pepo``)."""

    model_type = "pepo_qwen_vl_image_text"


class _InternVLImageTextProcessorKey(PretrainedConfig):
    """Registry key of :class:`InternVLImageTextProcessor` (see :class:`_QwenVLImageTextProcessorKey`)."""

    model_type = "pepo_internvl_image_text"


AutoProcessor.register(_QwenVLImageTextProcessorKey, QwenVLImageTextProcessor, exist_ok=True)
AutoProcessor.register(_InternVLImageTextProcessorKey, InternVLImageTextProcessor, exist_ok=True)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def load_model_and_processor(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a local VLM checkpoint and its processor, offline.

    Args:
        path: a directory written by ``save_pretrained`` (model weights + config and processor
            files), e.g. a Qwen2.5-VL-3B download or :func:`pepo.embedded.build_tiny_vlm`'s output.
        dtype: ``torch.float32`` / ``"bfloat16"`` / ``"auto"`` ...; ``None`` keeps float32, which
            is what CPU training wants.
        device: where to move the model (``"cpu"``, ``"cuda:0"``); ``None`` leaves it on CPU.
        trust_remote_code: passed to both loaders (needed by some InternVL releases).
        attn_implementation: ``"sdpa"``, ``"flash_attention_2"`` (the paper's setup, GPU only),
            ``"eager"``; ``None`` lets transformers choose.

    Returns:
        ``(model, processor)``; the model is in eval mode (a Qwen2.5-VL with
        :func:`pepo.mrope.vectorise_rope_index` installed).

    Raises:
        FileNotFoundError: ``path`` is not a directory or holds no ``config.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model path {str(path)!r} is not a directory (pepo loads local checkpoints only)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'}: missing; is {str(path)!r} a save_pretrained directory?")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype]
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype if dtype is not None else torch.float32, local_files_only=True,
        trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
    )
    processor = load_processor(path, trust_remote_code=trust_remote_code)
    if device is not None:
        model = model.to(device)
    vectorise_rope_index(model)  # Qwen2.5-VL: the same M-RoPE positions, without a Python loop over rows
    model.eval()
    return model, processor


# The stock processors pepo reads back as its images-and-text subclasses (no torchvision video processor).
IMAGE_TEXT_PROCESSORS: dict[str, type[ProcessorMixin]] = {
    "Qwen2_5_VLProcessor": QwenVLImageTextProcessor, "InternVLProcessor": InternVLImageTextProcessor,
    "Qwen3VLProcessor": Qwen3VLImageTextProcessor, "LlavaOnevisionProcessor": LlavaOnevisionImageTextProcessor,
}


def saved_processor_class(path: str | Path) -> str | None:
    """The processor class a checkpoint's files name, where transformers looks for it (the newer
    ``processor_config.json`` first, then the older files), or None."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file():
            named = json.loads(file.read_text()).get("processor_class")
            if named:
                return named
    return None


def load_processor(path: str | Path, *, trust_remote_code: bool = False) -> ProcessorMixin:
    """The processor of a local checkpoint alone (seconds, no weights): enough to check data against
    what the model accepts before loading it. A checkpoint naming ``Qwen2_5_VLProcessor`` or
    ``InternVLProcessor`` gets pepo's images-and-text subclass of it (the same prompts and image
    tokens; videos refused), so no torchvision is needed."""
    image_text = IMAGE_TEXT_PROCESSORS.get(saved_processor_class(path))
    if image_text is not None:
        return image_text.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    return AutoProcessor.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def image_size_check(processor: ProcessorMixin) -> Callable[[int, int], str | None]:
    """``accept(width, height) -> None`` if ``processor``'s image processor takes an image of that
    size, else its error message (e.g. Qwen2-VL's ``absolute aspect ratio must be smaller than 200``).

    Asks the image processor itself, on a black image of each distinct size once,
    so every model family's own limits (aspect ratio, minimum side, ...) are checked without a
    copy of its rules here. For :func:`pepo.data.load_benchmark`'s ``accept_image_size``.
    """
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return lambda width, height: None

    @functools.lru_cache(maxsize=None)
    def accept(width: int, height: int) -> str | None:
        try:
            image_processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as exc:
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None

    return accept


# ---------------------------------------------------------------------------------------------
# The parts of a loaded model
# ---------------------------------------------------------------------------------------------


def is_peft_model(model: torch.nn.Module) -> bool:
    """``accelerate.utils.is_peft_model`` without its package-metadata lookup (which it makes on every
    call, once per policy forward; tests/trainer/test_package_lookups.py): a PEFT model can only exist
    if ``peft`` has been imported."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


# Vision parts of a model whose family is not registered (pepo.families), by attribute name on the model or model.model.
VISION_TOWER_NAMES = ("visual", "vision_tower", "vision_model")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "mlp1", "visual.merger")


def _module_at(root: torch.nn.Module | None, path: str) -> torch.nn.Module | None:
    module = root
    for part in path.split("."):
        module = getattr(module, part, None) if module is not None else None
    return module if isinstance(module, torch.nn.Module) else None


def _find_modules(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    found = []
    for root in (model, getattr(model, "model", None)):
        for name in names:
            module = _module_at(root, name)
            if module is not None and all(module is not m for m in found):
                found.append(module)
    return found


def vision_parts(model: torch.nn.Module) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """``(towers, projectors)`` of ``model``: where its family (:mod:`pepo.families`) says, on each backbone
    (``Family.vision_tower``, ``Family.projectors``); for an unregistered family, the modules named
    :data:`VISION_TOWER_NAMES` / :data:`PROJECTOR_NAMES` on the model or ``model.model``."""
    family = family_of(model)
    if family is None or family.vision_tower is None:
        return _find_modules(model, VISION_TOWER_NAMES), _find_modules(model, PROJECTOR_NAMES)
    backbones = family.backbones_in(model)
    paths = (family.vision_tower, *family.projectors)
    missing = [path for path in paths for b in backbones if _module_at(b, path) is None]
    if not backbones or missing:
        raise ValueError(f"pepo.families: {family.name}'s backbone {family.backbone().__name__} in "
                         f"{type(model).__name__} has no module {missing or list(paths)} "
                         "(Family.vision_tower / projectors)")
    return ([_module_at(b, family.vision_tower) for b in backbones],
            [_module_at(b, path) for b in backbones for path in family.projectors])


def freeze_vision(model: torch.nn.Module, tower: bool, projector: bool) -> int:
    """Set ``requires_grad=False`` on the vision tower and/or projector (:func:`vision_parts`); returns
    parameters frozen.

    A projector inside the tower (Qwen2-VL's ``merger``, Qwen3-VL's ``deepstack_merger_list`` too) is
    the projector's: freezing only the tower leaves it trainable.
    """
    if is_peft_model(model):
        model = model.get_base_model()
    towers, projectors = vision_parts(model)
    projector_params = {id(p) for m in projectors for p in m.parameters()}
    targets = []
    if tower:
        if not towers:
            raise ValueError(f"freeze_vision_tower=True but {type(model).__name__} has none of {VISION_TOWER_NAMES}")
        targets += [p for m in towers for p in m.parameters() if id(p) not in projector_params]
    if projector:
        if not projectors:
            raise ValueError(f"freeze_projector=True but {type(model).__name__} has none of {PROJECTOR_NAMES}")
        targets += [p for m in projectors for p in m.parameters()]
    for p in targets:
        p.requires_grad_(False)
    return sum(p.numel() for p in targets)
