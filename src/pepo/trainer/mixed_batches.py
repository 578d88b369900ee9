"""Batches where some rows have images and some do not.

TRL scores a batch in chunks of rows and hands each chunk its slice of the image tensors
(``GRPOTrainer._get_per_token_logps_and_entropies``). A chunk of text-only rows gets an *empty*
slice (``pixel_values`` of shape ``(0, ...)``, ``image_grid_thw`` of shape ``(0, 3)``), and the
vision towers do not accept one: Qwen2.5-VL fails in ``torch.cat`` of no position ids. The same
happens to a whole micro-batch of text-only rows cut out of a mixed generation batch. Idefics3 and
SmolVLM get padding images (all zeros) instead of an empty slice, which their tower cannot take either. Without the
image inputs the forward is the language model's own, which is what a text-only chunk needs.

Text-only rows of a weighting mode that needs the perception prior get weight 1 by design
(``docs/method.md``). But where the trainer cannot compute that prior on any row, or on an image row,
the run would be the base algorithm under the mode's name, so :class:`~pepo.trainer.PEPOTrainer`
refuses it: a model without a known image token or a training set without any image row
(:func:`check_perception_is_possible`: ``pepo train`` before the weights load, the trainer when built),
a streamed training set whose first generation batch has no image row
(:func:`check_first_streamed_batch_has_images`) and an image row whose prompt holds no image token
(:func:`check_image_rows_have_image_tokens`, on each generation batch, before its loss).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from pepo.versions import signature_matches

# the per-image / per-tile inputs a VLM forward takes (TRL's names); all empty together or none
IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "image_sizes", "pixel_attention_mask", "spatial_shapes",
                "image_position_ids")


def _only_padding_images(pixel_values: torch.Tensor, kwargs) -> bool:
    """Idefics3 / SmolVLM (``(rows, images, 3, H, W)`` with ``pixel_attention_mask``) pad each row to the
    batch's most images with all-zero images, which their model drops; a chunk of text-only rows is
    then padding alone, which their vision tower cannot take (one host read, for that layout only)."""
    return pixel_values.dim() == 5 and "pixel_attention_mask" in kwargs and not bool(pixel_values.any())


def _drop_empty_image_inputs(module, args, kwargs):
    pixel_values = kwargs.get("pixel_values")
    if isinstance(pixel_values, torch.Tensor) and (pixel_values.size(0) == 0 or _only_padding_images(pixel_values, kwargs)):
        for key in IMAGE_INPUTS:
            kwargs.pop(key, None)
    return args, kwargs


def ignore_empty_image_inputs(model: nn.Module | None) -> None:
    """Make ``model``'s forward treat an empty ``pixel_values`` (a text-only chunk) as no image input.
    A VLM whose forward takes no ``pixel_values`` keyword (the hook's input) is left as it is, with
    one warning; a model without a vision tower needs no hook."""
    if model is None or getattr(model, "_pepo_ignores_empty_images", False):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper's forward is *args
    if getattr(getattr(base, "config", None), "vision_config", None) is None:
        return
    if not signature_matches("mixed_batches.pre_hook", type(base).forward, ("pixel_values",), exact=False):
        return
    model.register_forward_pre_hook(_drop_empty_image_inputs, with_kwargs=True)
    model._pepo_ignores_empty_images = True


def dataset_has_image_rows(dataset) -> bool | None:
    """Whether a row of ``dataset`` has an image in its ``images`` (else ``image``) column, the columns
    TRL reads images from; read from the Arrow column, no image decoded. ``False`` also for an
    ``IterableDataset`` whose known columns hold neither. ``None`` where that cannot be told without
    iterating the data: a stream with such a column or unknown columns, or no rows."""
    from datasets import Dataset, IterableDataset

    if isinstance(dataset, IterableDataset):
        names = dataset.column_names
        return None if names is None or {"images", "image"} & set(names) else False
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return None
    column = next((name for name in ("images", "image") if name in dataset.column_names), None)
    if column is None:
        return False
    cells = dataset.with_format("arrow")[column]
    if pa.types.is_list(cells.type) or pa.types.is_large_list(cells.type):  # one list of images per row
        return bool((pc.max(pc.list_value_length(cells)).as_py() or 0) > 0)
    return cells.null_count < len(cells)  # one image per row, None for a text-only row


def check_perception_is_possible(weighting: str, needs_perception: bool, image_token_id: int | None, dataset,
                                 model_name: str) -> None:
    """Under a mode that ``needs_perception``, refuse (``ValueError``, one line) a model without a known
    image token and a training set without any image row: every token weight would be 1, the base
    algorithm under the mode's name. ``pepo train`` calls it before the weights load (from the
    checkpoint's config and processor), :class:`~pepo.trainer.PEPOTrainer` when it is built."""
    if not needs_perception:
        return
    needs = f"weighting={weighting!r} needs the perception prior at the image tokens"
    instead = "or use weighting exploration (entropy only) or none"
    if image_token_id is None:
        raise ValueError(
            f"{needs}, but no image token id was found for {model_name} (not in its config's image_token_id / "
            f"image_token_index, nor the processor's image_token_id / image_token): set image_token to the "
            f"placeholder token its processor puts for each image, {instead} for a text-only model"
        )
    if dataset_has_image_rows(dataset) is False:
        raise ValueError(
            f"{needs}, but no row of train_dataset has an image (its 'images' / 'image' column is missing or "
            f"empty): every token weight would be 1, the base algorithm; give training data with images, {instead}"
        )


def check_first_streamed_batch_has_images(images, weighting: str) -> None:
    """A streamed training set (``IterableDataset``) cannot be read ahead for image rows; under a mode
    that needs the perception prior its first generation batch must hold one, else the run may be the
    base algorithm under the mode's name. ``images``: TRL's ``_tokenize_prompts`` output."""
    if not any(images or []):
        raise ValueError(
            f"weighting={weighting!r} needs the perception prior at the image tokens, but the first generation batch "
            "of the streamed train_dataset has no image row (a stream cannot be checked ahead): if the stream has "
            "image rows, put one among its first generation_batch_size / num_generations records; else use "
            "weighting exploration (entropy only) or none"
        )


def check_one_image_per_row(dataset, model_type: str | None) -> None:
    """Refuse a ``dataset`` row with several images for a model family that cannot train one
    (``Family.one_image_per_row``); read from the Arrow column, no image decoded. A dataset
    whose rows cannot be told without iterating it (``IterableDataset``) is not checked here."""
    from datasets import Dataset

    from pepo.families import one_image_per_row

    reason = one_image_per_row(model_type)
    if not reason or not isinstance(dataset, Dataset) or "images" not in dataset.column_names:
        return
    cells = dataset.with_format("arrow")["images"]
    if not (pa.types.is_list(cells.type) or pa.types.is_large_list(cells.type)):
        return  # one image per row at most
    counts = pc.fill_null(pc.list_value_length(cells), 0).to_pylist()
    row = next((i for i, count in enumerate(counts) if count > 1), None)
    if row is not None:
        raise ValueError(
            f"train_dataset row {row}: {counts[row]} images, but a {model_type} model cannot train a row with "
            f"several images ({reason}); give one image per row, or train a model of another family"
        )


def drop_batch_num_images(forward_kwargs: dict) -> None:
    """LLaVA-OneVision's processor gives ``batch_num_images`` (images per row), which TRL 1.16 passes to
    its ``_get_per_token_logps_and_entropies`` when it scores old log-probs, and that method takes no
    such argument (a ``TypeError``). With at most one image a row (``Family.one_image_per_row`` refuses
    more) the model without it treats each image as its row's only one: the same computation. More than
    one image a row here would be a bug: ``ValueError``."""
    counts = forward_kwargs.pop("batch_num_images", None)
    counts = [] if counts is None else [int(n) for n in counts]  # a few host reads, for this family only
    if any(n > 1 for n in counts):
        raise ValueError(f"batch_num_images {counts}: a row with several images reached a model family that "
                         "refuses them (Family.one_image_per_row); report this as a pepo bug")


def check_image_rows_have_image_tokens(prompt_ids, images, image_token_id: int, weighting: str, step: int) -> None:
    """Refuse a generation batch row that has images but no ``image_token_id`` in its tokenised prompt:
    the perception prior is read at those tokens, so the row would get weight 1 (the base algorithm)
    although it has an image. ``prompt_ids`` and ``images`` are TRL's ``_tokenize_prompts`` output."""
    for row, (ids, row_images) in enumerate(zip(prompt_ids, images or [], strict=False)):
        if row_images and image_token_id not in ids:
            raise ValueError(
                f"step {step}, generation batch row {row}: {len(row_images)} image(s) but no image token (id "
                f"{image_token_id}) in its tokenised prompt: weighting={weighting!r} reads the perception prior at "
                "the image tokens and would give this row weight 1 (the base algorithm). The id is not the "
                "placeholder the processor puts for each image: set image_token to that token (Qwen2-VL: "
                "'<|image_pad|>', InternVL: '<IMG_CONTEXT>') or fix the model config's image_token_id"
            )
