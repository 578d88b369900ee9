"""Score a GRPO batch with each distinct prompt run once (the families :mod:`pepo.families` marks
``shares_prompts``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

A GRPO batch holds every prompt ``num_generations`` times, and the prompt is most of each row: the
demo's rows are 47 prompt tokens (system turn, image, question) and about 12 completion tokens, so
TRL's policy forward spends three quarters of its work on copies. Under causal attention a prompt
token never sees the completion, so its keys and values are the same in every copy. That is the idea
of Prefix Grouper (Liu et al., "Efficient GRPO Training through Shared-Prefix Forward",
arXiv 2506.05433; verl's ``use_prefix_grouper``), done here with transformers' own key/value cache
instead of a modified attention, around TRL's forward:

1. the distinct prompts, minus their last token, run once with a key/value cache
   (``U`` rows of ``P - 1`` tokens);
2. the cache is gathered to the batch's ``B`` rows (an index: autograd sums each row's gradient
   back into its prompt's);
3. the prompt's last token and the completion (``1 + C`` tokens) run on top of it, through TRL's
   fused LM head, with the labels TRL gave: the log-probs of the ``C`` completion tokens.

Positions are the ones the whole row gets (M-RoPE index of the full ``(B, P + C)`` batch, then
sliced), and the mask is the row's whole attention mask, so every logit is the one of the plain
forward up to float rounding (``tests/test_prompt_sharing.py``: log-probs, entropies, gradients).

Rows share a prompt only if their prompt tokens, attention mask and images (grid and exact pixel
bits: :func:`pepo.image_sharing.image_fingerprints`, then one ``torch.equal``) are the same. The
plain forward runs instead for other model families, text-only batches, video, a model under
gradient checkpointing (it re-runs layers in backward, which would write the cache twice), and
batches without repeats.

Generation shares the prefill the same way (:func:`share_prompt_prefill` for TRL's ``generate``
call, :func:`generate_with_shared_prompts` for ``pepo eval``'s ``n`` samples per question): the
distinct prompts fill a cache once, and ``generate`` continues every row from it, sampling the same
tokens from the same logits up to float rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from pepo.families import family_of
from pepo.families.image_rows import image_rows, rows_of
from pepo.image_sharing import image_fingerprints
from pepo.versions import signature_matches

__all__ = [
    "PromptGroups", "SharedPromptForward", "generate_with_shared_prompts", "prompt_groups", "share_prompt_prefill",
    "sharing_backbone",
]


@dataclass
class PromptGroups:
    """Which rows run the prompt, and whose prompt each row takes."""

    first_rows: torch.Tensor  # (U,) the first row of each distinct prompt
    inverse: torch.Tensor  # (B,) each row's prompt, as an index into first_rows
    first_images: torch.Tensor  # (N_U,) the images of the first rows, in batch order
    first_pixel_rows: torch.Tensor  # their rows of pixel_values


def _images_of_rows(
    prompt_ids: torch.Tensor, image_grid_thw: torch.Tensor, image_token_id: int, merge: int
) -> list[list[int]]:
    """The batch's images (indices, in order) that each row holds, matched by image-token counts."""
    tokens_per_row = (prompt_ids == image_token_id).sum(1).tolist()
    tokens_per_image = [len(tokens) for tokens in image_rows(image_grid_thw, merge)]
    rows, image = [], 0
    for tokens in tokens_per_row:
        held = []
        while tokens > 0 and image < len(tokens_per_image):
            tokens -= tokens_per_image[image]
            held.append(image)
            image += 1
        if tokens != 0:
            raise ValueError("image tokens do not match image_grid_thw")
        rows.append(held)
    if image != len(tokens_per_image):
        raise ValueError("image tokens do not match image_grid_thw")
    return rows


def prompt_groups(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    image_token_id: int,
    merge: int,
) -> PromptGroups | None:
    """Group the rows of ``prompt_ids`` (B, P) / ``prompt_mask`` (B, P) by equal prompt and images;
    ``pixel_values`` (N_patches, F) and ``image_grid_thw`` (N, 3) hold the rows' images in batch order.
    ``None`` when every row is distinct, or when the images cannot be matched to rows exactly."""
    masked = prompt_ids.masked_fill(prompt_mask == 0, -1)
    device = prompt_ids.device
    row_images: list[list[int]] = [[] for _ in range(prompt_ids.size(0))]
    image_keys: list[tuple] = []
    pixel_rows: list[range] = []
    if pixel_values is not None and image_grid_thw is not None and image_grid_thw.numel() > 0:
        try:
            row_images = _images_of_rows(masked, image_grid_thw, image_token_id, merge)
        except ValueError:
            return None
        grids = [tuple(g) for g in image_grid_thw.tolist()]
        pixel_rows = image_rows(grids)
        image_keys = list(zip(grids, image_fingerprints(pixel_values, [len(rows) for rows in pixel_rows])))
    first: dict[tuple, int] = {}
    source = [
        first.setdefault((tuple(ids), tuple(image_keys[i] for i in held)), row)
        for row, (ids, held) in enumerate(zip(masked.tolist(), row_images))
    ]
    first_rows = sorted(set(source))
    if len(first_rows) == len(source):
        return None
    if pixel_rows:  # the token ids were compared exactly; the images' fingerprints only propose their groups
        copied = rows_of(pixel_rows, [i for row in source for i in row_images[row]], device)
        if not torch.equal(pixel_values, pixel_values[copied]):
            return None
    position = {row: i for i, row in enumerate(first_rows)}
    first_images = [i for row in first_rows for i in row_images[row]]
    return PromptGroups(
        first_rows=torch.tensor(first_rows, device=device),
        inverse=torch.tensor([position[row] for row in source], device=device),
        first_images=torch.tensor(first_images, dtype=torch.long, device=device),
        first_pixel_rows=rows_of(pixel_rows, first_images, device),
    )


def _checkpointed(backbone: nn.Module) -> bool:
    """Activation checkpointing re-runs the layers in backward, and each run would append to the cache."""
    layers = getattr(getattr(backbone, "language_model", None), "layers", None) or []
    return any(getattr(layer, "gradient_checkpointing", False) for layer in layers)


def _gathered_prompt_cache(model: nn.Module, groups: PromptGroups, positions: torch.Tensor, length: int, rows: torch.Tensor,
                           input_ids, attention_mask, pixel_values, image_grid_thw):
    """The first ``length`` tokens of each distinct prompt run once into a key/value cache, whose batch is
    then gathered to ``rows`` (indices into the distinct prompts: an index, so autograd sums the
    gradient of every copy into its prompt). ``positions``: the whole batch's (3, B, S) M-RoPE index."""
    first = groups.first_rows
    output = model(input_ids=input_ids[first, :length], attention_mask=attention_mask[first, :length],
                   position_ids=positions[:, first, :length], pixel_values=pixel_values[groups.first_pixel_rows],
                   image_grid_thw=image_grid_thw[groups.first_images], use_cache=True, logits_to_keep=1)
    cache = getattr(output, "cache", None)  # transformers >= 5.24 ("past_key_values" before)
    cache = cache if cache is not None else output.past_key_values
    cache.batch_select_indices(rows)
    return cache


class SharedPromptForward:
    """Stands in for the model in TRL's ``_get_per_token_logps_and_entropies``, which calls
    ``model(**model_inputs, labels=labels, fused_lm_head=True)`` once per chunk of rows: the same
    call, with each distinct prompt of the chunk run once (module docstring).

    ``model``: what TRL would call (possibly DDP-wrapped); ``backbone``: its ``Qwen2VLModel`` /
    ``Qwen2_5_VLModel`` (positions and the merge size come from it); ``completion_length``: TRL's
    ``logits_to_keep`` (the rows are ``P`` prompt then ``C`` completion tokens); ``on_prefix(inverse)``:
    called just before the prompts' forward with the ``(B,)`` row-to-prompt index (a hidden-state
    reader uses it to join the two forwards: :class:`pepo.trainer.capture.PromptJoin`).
    """

    def __init__(
        self, model: nn.Module, backbone: nn.Module, completion_length: int, image_token_id: int, on_prefix=None
    ):
        self.model = model
        self.backbone = backbone
        self.completion_length = int(completion_length)
        self.image_token_id = image_token_id
        self.merge = backbone.config.vision_config.spatial_merge_size
        self.on_prefix = on_prefix

    def __call__(self, input_ids, attention_mask, labels, fused_lm_head=False, pixel_values=None, image_grid_thw=None,
                 mm_token_type_ids=None, **other):
        plain = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                     image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids, **other)
        plain = {k: v for k, v in plain.items() if v is not None}
        P = input_ids.size(1) - self.completion_length  # the prompt's (left-padded) length
        groups = None
        shareable = fused_lm_head and P >= 2 and pixel_values is not None and mm_token_type_ids is not None and not other
        if shareable and not _checkpointed(self.backbone) and not bool((input_ids[:, P - 1] == self.image_token_id).any()):
            groups = prompt_groups(input_ids[:, :P], attention_mask[:, :P], pixel_values, image_grid_thw,
                                   self.image_token_id, self.merge)
        if groups is None:
            return self.model(**plain, labels=labels, fused_lm_head=fused_lm_head)
        # the positions of the whole rows, as the plain forward computes them (M-RoPE index), then sliced
        positions, _ = self.backbone.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
                                                    attention_mask=attention_mask)
        if self.on_prefix is not None:
            self.on_prefix(groups.inverse)
        cache = _gathered_prompt_cache(self.model, groups, positions, P - 1, groups.inverse,
                                       input_ids, attention_mask, pixel_values, image_grid_thw)
        return self.model(input_ids=input_ids[:, P - 1 :], attention_mask=attention_mask,
                          position_ids=positions[:, :, P - 1 :], cache=cache, labels=labels[:, P - 1 :], fused_lm_head=True)


def sharing_backbone(model: nn.Module) -> nn.Module | None:
    """The one backbone (``Qwen2VLModel``, ``Qwen2_5_VLModel``, ``Qwen3VLModel``, ...) inside ``model``
    (wrapped or not) of a family that :mod:`pepo.families` marks ``shares_prompts``, else ``None``: the
    families whose positions :class:`SharedPromptForward` knows how to slice."""
    family = family_of(model)
    if family is None or not family.shares_prompts:
        return None
    found = family.backbones_in(model)
    if len(found) != 1:
        return None
    backbone = found[0]
    # the calls below pass get_rope_index these names, and the forward a cache and M-RoPE position_ids
    if not (signature_matches("prompt_sharing", type(backbone).get_rope_index, family.rope_index_parameters)
            and signature_matches("prompt_sharing", type(backbone).forward, family.backbone_forward_inputs,
                                  exact=False)):
        return None
    return backbone


# model inputs the shared prefill does not handle: generate runs as it is
_UNSHARED_INPUTS = ("inputs_embeds", "position_ids", "cache", "past_key_values", "pixel_values_videos",
                    "video_grid_thw", "second_per_grid_ts")


def _generate_with_shared_prompts(model: nn.Module, backbone: nn.Module, generate, *args, **kwargs):
    """``generate(**kwargs)`` with the prompts' prefill shared: each distinct prompt, minus its last
    token, runs once into a cache that is gathered to every row (and to each of its
    ``num_return_sequences`` samples, as generate would expand them), and ``generate`` continues from
    it (transformers restarts from a cache given the full ``input_ids``; the M-RoPE deltas of the
    whole rows are set on the backbone as its own first step would). Else ``generate`` as it is."""
    input_ids, attention_mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    pixel_values, image_grid_thw = kwargs.get("pixel_values"), kwargs.get("image_grid_thw")
    mm_token_type_ids = kwargs.get("mm_token_type_ids")
    image_token_id = model.config.image_token_id
    if args or any(kwargs.get(name) is not None for name in _UNSHARED_INPUTS) or input_ids is None \
            or attention_mask is None or pixel_values is None or image_grid_thw is None or mm_token_type_ids is None \
            or input_ids.size(1) < 2 or bool((input_ids[:, -1] == image_token_id).any()):
        return generate(*args, **kwargs)
    config = kwargs["generation_config"] if kwargs.get("generation_config") is not None else model.generation_config
    samples = kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", None) or 1
    merge = backbone.config.vision_config.spatial_merge_size
    groups = prompt_groups(input_ids, attention_mask, pixel_values, image_grid_thw, image_token_id, merge)
    if groups is None and samples == 1:
        return generate(**kwargs)
    if groups is None:  # distinct prompts, each sampled several times: every row is its own group
        every_row = torch.arange(input_ids.size(0), device=input_ids.device)
        groups = PromptGroups(every_row, every_row, torch.arange(image_grid_thw.size(0), device=input_ids.device),
                              torch.arange(pixel_values.size(0), device=input_ids.device))
    positions, deltas = backbone.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
                                                attention_mask=attention_mask)
    with torch.no_grad():
        sample_rows = groups.inverse.repeat_interleave(samples)  # each row's samples, as generate would expand them
        cache = _gathered_prompt_cache(model, groups, positions, input_ids.size(1) - 1, sample_rows,
                                       input_ids, attention_mask, pixel_values, image_grid_thw)
    backbone.rope_deltas = deltas.repeat_interleave(samples, dim=0)
    per_row = ("input_ids", "attention_mask", "mm_token_type_ids")
    expanded = {name: kwargs[name].repeat_interleave(samples, dim=0) for name in per_row}
    rest = {k: v for k, v in kwargs.items() if k not in ("pixel_values", "image_grid_thw", "num_return_sequences", *per_row)}
    return generate(**rest, **expanded, num_return_sequences=1, cache=cache)  # the rows are the samples already


def generate_with_shared_prompts(model: nn.Module, **kwargs):
    """``model.generate(**kwargs)`` with each distinct prompt prefilled once, for callers that call
    ``generate`` themselves (``pepo eval``: one prompt, ``n`` samples); any model of another family
    gets ``model.generate`` as it is."""
    backbone = sharing_backbone(model)
    if backbone is None:
        return model.generate(**kwargs)
    return _generate_with_shared_prompts(model, backbone, model.generate, **kwargs)


def share_prompt_prefill(model: nn.Module, enabled: bool = True) -> bool:
    """Make ``model.generate`` prefill each distinct prompt of a batch once (an instance attribute: the
    class and other models are untouched; ``enabled=False`` takes it off again). Returns whether it is on."""
    installed = "generate" in vars(model) and getattr(model, "_pepo_shares_prompt_prefill", False)
    if not enabled:
        if installed:
            del model.generate
            model._pepo_shares_prompt_prefill = False
        return False
    backbone = sharing_backbone(model)
    if backbone is None or installed:
        return backbone is not None
    model.generate = functools.partial(_generate_with_shared_prompts, model, backbone, model.generate)
    model._pepo_shares_prompt_prefill = True
    return True
