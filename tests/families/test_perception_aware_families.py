"""PAPO and VPPO train one step each through ``pepo train``'s own code on the tiny Qwen2.5-VL (patch rows)
and pixel-space families, their extra forward on that family's images with the encoder's patches blackened
(pepo.families.patch_layout); Qwen3-VL and Qwen3.5: tests/families/test_qwen3_vl.py."""

from __future__ import annotations

import pytest
import torch

from .test_qwen3_vl import train

PIXEL_FAMILIES = ["gemma3", "internvl", "idefics3", "smolvlm", "llava_onevision"]


class RecordedMasking:
    """Each masking of the run (the batch, its rows' images and groups, the masked pixels) and the images of
    every no-grad extra forward."""

    def __init__(self, trainer):
        self.maskings, self.forwards = [], []
        mask, forward = trainer._masked_pixel_values, trainer._no_grad_logps

        def masked_pixel_values(batch, num_images):
            out = mask(batch, num_images)
            self.maskings.append((dict(batch), list(num_images), out.clone()))
            return out

        def no_grad_logps(batch, pixel_values):
            self.forwards.append(pixel_values.clone())
            return forward(batch, pixel_values)

        trainer._masked_pixel_values, trainer._no_grad_logps = masked_pixel_values, no_grad_logps


def square_states(original: torch.Tensor, masked: torch.Tensor, real: torch.Tensor | None, black: torch.Tensor,
                  patch: int) -> torch.Tensor:
    """``(T, rows, columns)`` long per encoder patch square of real tiles: 0 unchanged, 1 black on its real
    pixels; asserts every square is one of the two and no pixel outside a whole square changed."""
    tiles, channels, height, width = original.shape
    real = torch.ones(tiles, height, width, dtype=torch.bool) if real is None else real.bool()
    rows, columns = height // patch, width // patch
    changed = (masked != original).any(1)
    assert not changed[:, rows * patch :].any() and not changed[:, :, columns * patch :].any()
    assert not changed[~real].any()  # padding pixels as the processor wrote them
    is_black = (masked == black.view(1, channels, 1, 1)).all(1) | ~real

    def per_square(t):
        return t[:, : rows * patch, : columns * patch].reshape(tiles, rows, patch, columns, patch).all(4).all(2)

    blackened, untouched = per_square(is_black), per_square(~changed)
    assert (blackened | untouched).all()
    return (blackened & ~untouched).long()


def blackened_rows(original: torch.Tensor, masked: torch.Tensor, black: torch.Tensor) -> torch.Tensor:
    """``(rows,)`` bool per patch row: blackened (the black row) or not (unchanged); asserts one of the two."""
    changed = (masked != original).any(1)
    assert torch.equal(masked[changed], black.expand(int(changed.sum()), -1))
    assert torch.equal(masked[~changed], original[~changed])
    return changed


@pytest.mark.slow
@pytest.mark.parametrize("method", ["papo", "vppo"])
@pytest.mark.parametrize("family", ["qwen2_5_vl", *PIXEL_FAMILIES])
def test_a_family_trains_papo_and_vppo_on_blackened_patches(family, method, synthetic_data_dir, tmp_path,
                                                            length_reward_registered, request):
    from pepo.embedded import build_tiny_vlm
    from pepo.families import family_of
    from pepo.patch_masking import black_row, black_value, encoder_patch_size

    path = (request.getfixturevalue("tiny_vlm_path") if family == "qwen2_5_vl"
            else build_tiny_vlm(tmp_path / family, seed=0, family=family))
    trainer = train(path, synthetic_data_dir, tmp_path / "run", length_reward_registered,
                    "--max_steps", "1", "--weighting", "none", "--perception_aware", method)
    assert trainer.model.config.model_type == family
    layout = family_of(trainer.model).patch_layout
    assert layout.kind == ("patch rows" if family == "qwen2_5_vl" else "pixel squares")
    recorded = RecordedMasking(trainer)
    trainer.train()
    [log] = [e for e in trainer.state.log_history if "loss" in e]
    assert log["grad_norm"] > 0 and ("papo/kl_prcp" if method == "papo" else "vppo/adv_scale/mean") in log
    [(batch, num_images, masked)] = recorded.maskings
    # the extra forward ran on the masked images (VPPO: also once on the originals, for the rollout log-probs)
    assert any(torch.equal(images, masked) for images in recorded.forwards)
    assert len(recorded.forwards) == (1 if method == "papo" else 2)
    if layout.kind == "patch rows":  # Qwen2.5-VL: rows of 3 x 2 x 14 x 14 values
        black = black_row(trainer.processing_class.image_processor)
        changed = blackened_rows(batch["pixel_values"], masked, black)
        assert 0 < int(changed.sum()) < changed.numel() and black.numel() == 3 * 2 * 14 * 14
        return
    groups = [row // trainer.num_generations for row in range(len(num_images))]
    config = trainer.model.config
    original = layout.tiles(batch, num_images, groups, config)
    masked_tiles = layout.tiles(dict(batch, pixel_values=masked), num_images, groups, config).pixels
    real_tiles = torch.tensor([key is not None for key in original.keys])
    assert torch.equal(masked_tiles[~real_tiles], original.pixels[~real_tiles])  # padding tiles untouched
    real_pixels = None if original.real_pixels is None else original.real_pixels[real_tiles]
    black = black_value(trainer.processing_class.image_processor)
    states = square_states(original.pixels[real_tiles], masked_tiles[real_tiles], real_pixels, black,
                           encoder_patch_size(config))
    assert 0 < int(states.sum()) < states.numel()  # some of this family's patches blackened, others not
