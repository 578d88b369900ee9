"""Perception prior: how close each response token's hidden states are to the image tokens'
(PEPO_SPEC.md section 2), averaged over the ``L + 1`` hidden-state tensors and the image tokens.

    cosine: v[b,t] =  1/(L+1) sum_l 1/|V_b| sum_{j in V_b} cos(H^l[b,s], H^l[b,j])
    dot:    v[b,t] =  1/(L+1) sum_l 1/|V_b| sum_j <H^l[b,s], H^l[b,j]>
    l2:     v[b,t] = -1/(L+1) sum_l 1/|V_b| sum_j sqrt(max(||H^l[b,s] - H^l[b,j]||^2, 0) + 1e-6)
    l1:     v[b,t] = -1/(L+1) sum_l 1/|V_b| sum_j ||H^l[b,s] - H^l[b,j]||_1

with ``s = S - T + t``. The mean over ``j`` of a dot product is the dot product with the mean, so

    mean_j cos(h, h_j) = < h / ||h||, mean_j h_j / ||h_j|| >      mean_j <h, h_j> = < h, mean_j h_j >

which costs one read of the hidden states per layer (O(S*D)) instead of the O(T*|V|*D) similarity
matrix the reference release builds. L1 and L2 have no such identity: they are computed in chunks
of response positions so memory stays bounded. Everything accumulates in float32, converting the
model's (possibly bf16) hidden states a bounded slice at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NORM_EPS = 1e-12  # x / max(||x||, 1e-12), as torch.nn.functional.normalize
L2_EPS = 1e-6  # inside the square root of the l2 distance (spec section 2)


def _float_slices(hidden: torch.Tensor, start: int, stop: int, chunk: int):
    """Yield ``(offset, hidden[:, a:b].float())`` slices covering positions ``[start, stop)``."""
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        yield a, hidden[:, a:b].float()


def _mean_image_vector(
    hidden: torch.Tensor, vision_weight: torch.Tensor, span: tuple[int, int], normalize: bool, chunk: int
) -> torch.Tensor:
    """``(B, D)`` float32: sum_j vision_weight[b, j] * (h_j or h_j / ||h_j||) over image positions."""
    acc = torch.zeros(hidden.shape[0], hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    for a, x in _float_slices(hidden, span[0], span[1], chunk):
        w = vision_weight[:, a : a + x.shape[1]]
        if normalize:
            w = w / torch.linalg.vector_norm(x, dim=-1).clamp_min(NORM_EPS)
        acc += torch.bmm(w.unsqueeze(1), x).squeeze(1)
    return acc


def _mean_similarity_to_image(
    hidden: torch.Tensor, vision_weight: torch.Tensor, span: tuple[int, int], T: int, normalize: bool, chunk: int
) -> torch.Tensor:
    """``(B, T)`` float32 mean cosine (``normalize``) or dot product with the image tokens, one layer."""
    target = _mean_image_vector(hidden, vision_weight, span, normalize, chunk)  # (B, D)
    S = hidden.shape[1]
    out = torch.empty(hidden.shape[0], T, dtype=torch.float32, device=hidden.device)
    for a, x in _float_slices(hidden, S - T, S, chunk):
        score = torch.bmm(x, target.unsqueeze(-1)).squeeze(-1)  # (B, c)
        if normalize:
            score = score / torch.linalg.vector_norm(x, dim=-1).clamp_min(NORM_EPS)
        out[:, a - (S - T) : a - (S - T) + x.shape[1]] = score
    return out


def _gather_image_tokens(hidden: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """``(B, Vmax, D)`` float32 hidden states of each row's image tokens (padding rows repeat index 0)."""
    D = hidden.shape[-1]
    return hidden.gather(1, image_index.unsqueeze(-1).expand(-1, -1, D)).float()


def _mean_distance_to_image(
    hidden: torch.Tensor, image_index: torch.Tensor, image_valid_weight: torch.Tensor, T: int, p: int, chunk: int
) -> torch.Tensor:
    """``(B, T)`` float32 mean l1 (``p=1``) or l2 (``p=2``) distance to the image tokens, one layer."""
    images = _gather_image_tokens(hidden, image_index)  # (B, Vmax, D)
    if p == 2:
        image_sq = images.square().sum(-1)  # (B, Vmax)
    S = hidden.shape[1]
    out = torch.empty(hidden.shape[0], T, dtype=torch.float32, device=hidden.device)
    for a, x in _float_slices(hidden, S - T, S, chunk):
        if p == 2:
            # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 <a, b>: one fused matrix product, then in place;
            # the sum can round below 0, hence the clamp
            norms = x.square().sum(-1, keepdim=True) + image_sq.unsqueeze(1)  # (B, c, Vmax)
            dist = torch.baddbmm(norms, x, images.transpose(1, 2), alpha=-2.0)
            dist.clamp_min_(0.0).add_(L2_EPS).sqrt_()
        else:
            dist = torch.cdist(x, images, p=1.0)
        out[:, a - (S - T) : a - (S - T) + x.shape[1]] = torch.bmm(dist, image_valid_weight.unsqueeze(-1)).squeeze(-1)
    return out


PERCEPTION_MEASURES: tuple[str, ...] = ("cosine", "dot", "l2", "l1")


class PerceptionAccumulator:
    """:func:`perception_scores` fed one hidden-state tensor at a time, so that a caller can reduce each
    layer's output as soon as the model computes it and keep none of them:

        acc = PerceptionAccumulator(vision_mask, logits_to_keep, measure)
        for hidden in hidden_states:   # H^0 ... H^L, each (B, S, D)
            acc.add(hidden)
        v = acc.result()               # (B, T) float32, bit for bit perception_scores(hidden_states, ...)

    Arguments as :func:`perception_scores`. Holds only ``(B, T)`` and ``(B, S)`` tensors between calls.
    """

    @torch.no_grad()
    def __init__(self, vision_mask: torch.Tensor, logits_to_keep: int, measure: str = "cosine", chunk_size: int = 256):
        if measure not in PERCEPTION_MEASURES:
            raise ValueError(f"perception_scores: unknown measure {measure!r}; choose one of {PERCEPTION_MEASURES}")
        if vision_mask.dim() != 2:
            raise ValueError(f"perception_scores: vision_mask must be (B, S), got shape {tuple(vision_mask.shape)}")
        B, S = vision_mask.shape
        T = int(logits_to_keep)
        if not 0 < T <= S:
            raise ValueError(f"perception_scores: logits_to_keep must be in [1, S={S}], got {T}")
        if chunk_size <= 0:
            raise ValueError(f"perception_scores: chunk_size must be > 0, got {chunk_size}")
        self.shape, self.T, self.layers = (B, S), T, 0
        self._D: int | None = None  # hidden size, from the first tensor added
        self.vision_mask = vision_mask.to(torch.bool)
        self._layer_score: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._total: torch.Tensor | None = None
        counts = self.vision_mask.sum(1)  # (B,)
        if not bool(counts.any()):
            return  # no image in any row: no work per layer, zeros at the end
        inv_count = 1.0 / counts.clamp_min(1).float()  # rows without images: every term below is 0

        if measure in ("cosine", "dot"):
            columns = self.vision_mask.any(0).nonzero()
            span = (int(columns[0]), int(columns[-1]) + 1)  # only the positions holding image tokens
            vision_weight = self.vision_mask.float() * inv_count.unsqueeze(1)  # (B, S): 1/|V_b| on image tokens
            self._layer_score = lambda h: _mean_similarity_to_image(
                h, vision_weight.to(h.device), span, T, measure == "cosine", chunk_size
            )
            self._sign = 1.0
        else:
            vmax = int(counts.max())
            # stable sort puts each row's image positions first, in order: (B, Vmax) indices
            image_index = torch.sort((~self.vision_mask).to(torch.uint8), dim=1, stable=True).indices[:, :vmax]
            valid = torch.arange(vmax, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
            image_valid_weight = valid.float() * inv_count.unsqueeze(1)  # (B, Vmax)
            p = 2 if measure == "l2" else 1
            # distance chunks are (B, chunk, Vmax): keep them about as large as the similarity chunks
            dist_chunk = max(1, min(chunk_size, (chunk_size * 1024) // max(vmax, 1)))
            self._layer_score = lambda h: _mean_distance_to_image(
                h, image_index.to(h.device), image_valid_weight.to(h.device), T, p, dist_chunk
            )
            self._sign = -1.0

    @torch.no_grad()
    def add(self, hidden: torch.Tensor) -> None:
        """Add one ``(B, S, D)`` hidden-state tensor (any float dtype; it is not kept)."""
        if hidden.dim() != 3 or tuple(hidden.shape[:2]) != self.shape:
            raise ValueError(
                f"perception_scores: vision_mask must be (B, S) = {tuple(hidden.shape[:2])} of the hidden states, "
                f"got {self.shape}"
            )
        if self._D is not None and hidden.shape[2] != self._D:
            raise ValueError("perception_scores: all hidden_states must share one (B, S, D) shape")
        self._D = hidden.shape[2]
        self.layers += 1
        if self._layer_score is None:
            return
        score = self._layer_score(hidden)
        if self._total is None:
            self._total = torch.zeros_like(score)
        self._total += score

    @torch.no_grad()
    def result(self) -> torch.Tensor:
        """``(B, T)`` float32 mean score over the tensors added (0 for rows without image tokens)."""
        if self.layers == 0:
            raise ValueError("perception_scores: hidden_states is empty; run the model with output_hidden_states=True")
        if self._total is None:
            return torch.zeros(self.shape[0], self.T, dtype=torch.float32, device=self.vision_mask.device)
        return self._total.mul_(self._sign / self.layers)


@torch.no_grad()
def perception_scores(
    hidden_states: Sequence[torch.Tensor],
    vision_mask: torch.Tensor,
    logits_to_keep: int,
    measure: str = "cosine",
    chunk_size: int = 256,
) -> torch.Tensor:
    """Visual similarity of every completion token to its row's image tokens.

    Args:
        hidden_states: ``L + 1`` tensors of shape ``(B, S, D)``, any float dtype (what a
            Hugging Face model returns with ``output_hidden_states=True``).
        vision_mask: ``(B, S)`` bool, True at image-placeholder positions (all images of a row).
        logits_to_keep: ``T``, the completion length; the last ``T`` positions are scored.
        measure: ``"cosine"`` (default, the paper's choice), ``"dot"``, ``"l2"`` or ``"l1"``
            (distances are negated so that larger always means closer).
        chunk_size: sequence positions converted to float32 at once; bounds the extra memory.

    Returns:
        ``(B, T)`` float32 scores. Rows without image tokens get 0 (no perception prior; with
        these scores :func:`pepo.token_weights` gives them all-1 weights).

    To reduce the layers one by one as a model computes them, use :class:`PerceptionAccumulator`.
    """
    if measure not in PERCEPTION_MEASURES:
        raise ValueError(f"perception_scores: unknown measure {measure!r}; choose one of {PERCEPTION_MEASURES}")
    if len(hidden_states) == 0:
        raise ValueError("perception_scores: hidden_states is empty; run the model with output_hidden_states=True")
    B, S, _ = hidden_states[0].shape
    if vision_mask.shape != (B, S):
        raise ValueError(f"perception_scores: vision_mask must be (B, S) = {(B, S)}, got {tuple(vision_mask.shape)}")
    accumulator = PerceptionAccumulator(vision_mask.to(hidden_states[0].device), logits_to_keep, measure, chunk_size)
    for hidden in hidden_states:
        accumulator.add(hidden)
    return accumulator.result()
