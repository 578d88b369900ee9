"""What the tiny VLM's image tokens carry: a linear probe of each cell's colour and shape.

    python benchmarks/probe_vision_tower.py runs/demo/tiny_vlm runs/demo/warm_start/checkpoint

For each checkpoint: the image features the language model receives (vision tower + projector,
one token per grid cell of the synthetic task) for 1200 fresh scenes; a linear softmax probe is
fitted on 900 scenes' tokens and scored on the other 300, for the cell's colour (5 + empty) and
its shape (4 + empty). This is the measurement behind the demo's frozen tower during the warm
start (:func:`pepo.embedded.recipe.warm_start`): the random tower's tokens are already linearly
readable, so the warm start only has to teach the language model to read them.
"""

from __future__ import annotations

import argparse
import random

import torch


def image_token_features(model, processor, images) -> torch.Tensor:
    """(n_images * 4, D) features after the projector, in cell order."""
    inputs = processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.cat(list(features)) if isinstance(features, (list, tuple)) else features


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, n_train: int, steps: int = 500) -> float:
    """Held-out accuracy of a linear softmax probe (Adam, small L2) on standardised features."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], int(labels.max()) + 1, requires_grad=True)
    bias = torch.zeros(weight.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=0.01)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x[:n_train] @ weight + bias, labels[:n_train]) + 1e-3 * weight.square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return ((x[n_train:] @ weight + bias).argmax(-1) == labels[n_train:]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="tiny VLM checkpoint folders")
    parser.add_argument("--scenes", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    from pepo.embedded import synthetic
    from pepo.modeling import load_model_and_processor

    rng = random.Random(args.seed)
    problems = [synthetic.make_problem(rng) for _ in range(args.scenes)]
    images = [synthetic.render(p) for p in problems]
    cells = [cell for p in problems for cell in p.scene.cells]
    colours, shapes = list(synthetic.COLOURS), list(synthetic.SHAPES)
    labels = {
        "colour": torch.tensor([colours.index(c[0]) + 1 if c else 0 for c in cells]),
        "shape": torch.tensor([shapes.index(c[1]) + 1 if c else 0 for c in cells]),
    }
    n_train = 4 * (3 * args.scenes // 4)
    print(f"linear probe, {args.scenes - n_train // 4} held-out scenes x 4 cells")
    print("| checkpoint | feature norm | colour acc | shape acc | shape majority class |")
    print("|---|---:|---:|---:|---:|")
    for path in args.checkpoints:
        model, processor = load_model_and_processor(path)
        features = image_token_features(model, processor, images)
        held_out = labels["shape"][n_train:]
        majority = (held_out == held_out.mode().values).float().mean().item()
        accuracy = {k: probe_accuracy(features, y, n_train) for k, y in labels.items()}
        print(f"| {path} | {features.norm(dim=-1).mean():.2f} | {100 * accuracy['colour']:.1f} "
              f"| {100 * accuracy['shape']:.1f} | {100 * majority:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
