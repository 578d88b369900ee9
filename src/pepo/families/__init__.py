"""What differs between vision-language model families, in one place.

A :class:`Family` tells pepo's family-specific speed-ups, and PAPO / VPPO's patch masking, what they
need to know about a model of that family; :func:`family_of` finds it once per model from its
config's ``model_type``. A model whose family is not registered (or registers none) gets none of the
speed-ups: TRL's and transformers' plain computation runs (each caller says what it falls back to;
the results are the same, only slower); PAPO / VPPO refuse it in one line.

=====================  ======================  ==========  =======  =======  ==============
family                 ``model_type``          M-RoPE      image    prompt   patch layout
                                               index       sharing  sharing  (PAPO / VPPO)
=====================  ======================  ==========  =======  =======  ==============
Qwen2-VL               ``qwen2_vl``            loop        yes      yes      patch rows
Qwen2.5-VL             ``qwen2_5_vl``          vectorised  yes      yes      patch rows
Qwen3-VL               ``qwen3_vl``            vectorised  yes      yes      patch rows
Qwen3.5                ``qwen3_5``             vectorised  yes      no (1)   patch rows
Gemma 3                ``gemma3``              --          no       no       pixel squares
InternVL               ``internvl``            --          no       no       pixel squares
Idefics3, SmolVLM      ``idefics3``,           --          no       no       pixel squares
                       ``smolvlm``
LLaVA-OneVision        ``llava_onevision``     --          no       no       pixel squares
=====================  ======================  ==========  =======  =======  ==============

(1) its Gated DeltaNet layers' cache cannot be gathered to the batch's rows (transformers 5.24).

* **M-RoPE index** (:mod:`pepo.mrope`): "vectorised" where the family's ``get_rope_index`` gives the
  same positions as :func:`pepo.mrope.rope_index` for images and text; "loop": transformers' own.
* **image sharing** (:mod:`pepo.image_sharing`): the vision tower encodes each distinct image of a
  call once; the family names the tower's output fields with one row per image token
  (``tower_merged_outputs``: Qwen3-VL adds its deepstack features), which are gathered back per copy.
* **prompt sharing** (:mod:`pepo.prompt_sharing`): each distinct prompt runs once into a key/value
  cache; needs the backbone's ``get_rope_index`` and a forward taking ``cache`` and M-RoPE ``position_ids``.
* **patch layout** (:mod:`pepo.families.patch_layout`, blackened by :mod:`pepo.patch_masking`): where
  the processor writes each encoder patch PAPO and VPPO blacken: "patch rows", one ``pixel_values``
  row per patch; "pixel squares", normalised ``(C, H, W)`` tiles in which the family's ``tiles``
  function says which tiles (and pixels) are real and whose. None: PAPO / VPPO refused in one line.
* **vision tower, projectors** (:func:`pepo.modeling.freeze_vision`): their module paths on the
  backbone (Qwen: ``visual``, with ``visual.merger`` and Qwen3-VL's ``visual.deepstack_merger_list``
  as projectors; Gemma 3, InternVL, LLaVA-OneVision: ``vision_tower`` and ``multi_modal_projector``;
  Idefics3, SmolVLM: ``vision_model`` and ``connector``).

Which rows of ``pixel_values`` belong to which image (for the processors giving ``image_grid_thw``)
is said once, in :mod:`pepo.families.image_rows`; image and prompt sharing, patch masking, the
image-processor cache and dynamic sampling read it there.

Add a family with one module defining a :class:`Family` and one :func:`register_family` call
(``docs/families.md`` has a worked example).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from pepo.families.patch_layout import PatchLayout

__all__ = ["FAMILIES", "Family", "backbones", "family_of", "one_image_per_row", "register_family"]

@dataclass(frozen=True)
class Family:
    """What pepo needs to know about one family of transformers VLMs."""

    name: str
    model_types: tuple[str, ...]  # the config ``model_type`` values of its checkpoints
    backbone: Callable[[], type]  # the transformers class holding the vision tower and the language model
    rope_index_parameters: tuple[str, ...]  # transformers' ``get_rope_index`` parameters pepo's callers expect; () none
    vectorised_rope_index: bool = False  # pepo.mrope.rope_index gives this family's positions (tested)
    tower_merged_outputs: tuple[str, ...] = ()  # the tower output's per-image-token fields; () turns image sharing off
    shares_prompts: bool = False  # pepo.prompt_sharing runs its prompts once (tested)
    tower_forward_parameters: tuple[str, ...] = ("self", "hidden_states", "grid_thw", "**kwargs")
    # what prompt sharing passes the backbone's forward (it must take them; "**kwargs": passed on to the language model)
    backbone_forward_inputs: tuple[str, ...] = ("input_ids", "attention_mask", "position_ids", "cache", "pixel_values",
                                                "image_grid_thw", "use_cache")
    # where the processor writes each patch, for PAPO / VPPO's blackening (pepo.families.patch_layout); None: refused
    patch_layout: PatchLayout | None = None
    # the vision tower's and the projectors' module paths on the backbone (pepo.modeling.freeze_vision); a projector
    # inside the tower is the projector's. None: the module names of pepo.modeling.VISION_TOWER_NAMES / PROJECTOR_NAMES
    vision_tower: str | None = None
    projectors: tuple[str, ...] = ()
    # why a training row with several images cannot train with this family (TRL 1.16 / transformers 5.24), or ""
    # where it can (tests/families/test_several_images.py); pepo train refuses such records when it reads them
    one_image_per_row: str = ""

    def backbones_in(self, model: nn.Module) -> list[nn.Module]:
        """The family's backbone modules inside ``model`` (wrapped or not)."""
        backbone = self.backbone()
        return [m for m in model.modules() if isinstance(m, backbone)]


#: ``model_type`` -> its family
FAMILIES: dict[str, Family] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make ``family`` known for each of its ``model_types``; a type already registered to another
    family is refused unless ``replace``. Returns ``family``."""
    taken = [t for t in family.model_types if t in FAMILIES and FAMILIES[t] is not family]
    if taken and not replace:
        raise ValueError(f"register_family: model_type {taken} already registered to {FAMILIES[taken[0]].name!r}; "
                         "pass replace=True to replace it")
    FAMILIES.update(dict.fromkeys(family.model_types, family))
    return family


def family_of(model: nn.Module) -> Family | None:
    """The registered family of ``model`` (wrapped in DDP / PEFT or not) by its config's ``model_type``,
    or None."""
    for module in model.modules():  # the model itself first; a wrapper's wrapped model next
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if model_type is not None:
            return FAMILIES.get(model_type)
    return None


def one_image_per_row(model_type: str | None) -> str:
    """Why a ``model_type`` cannot train a row with several images, or "" (also for an unregistered type)."""
    family = FAMILIES.get(model_type)
    return "" if family is None else family.one_image_per_row


def backbones(model: nn.Module) -> list[nn.Module]:
    """The backbones of ``model``'s registered family inside it; [] for an unregistered family."""
    family = family_of(model)
    return [] if family is None else family.backbones_in(model)


# the built-in families register themselves
from pepo.families import gemma3, idefics3, internvl, llava_onevision, qwen2_vl, qwen3_vl  # noqa: E402,F401
