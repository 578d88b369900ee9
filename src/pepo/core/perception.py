"""Perception prior: how close each response token's hidden states are to the image tokens'
(``docs/method.md``, Perception prior), averaged over the ``L + 1`` hidden-state tensors and the image tokens.

    cosine: v[b,t] =  1/(L+1) sum_l 1/|V_b| sum_{j in V_b} cos(H^l[b,s], H^l[b,j])
    dot:    v[b,t] =  1/(L+1) sum_l 1/|V_b| sum_j <H^l[b,s], H^l[b,j]>
    l2:     v[b,t] = -1/(L+1) sum_l 1/|V_b| sum_j sqrt(max(||H^l[b,s] - H^l[b,j]||^2, 0) + 1e-6)
    l1:     v[b,t] = -1/(L+1) sum_l 1/|V_b| sum_j ||H^l[b,s] - H^l[b,j]||_1

with ``s = S - T + t``. The mean over ``j`` of a dot product is the dot product with the mean, so

    mean_j cos(h, h_j) = < h / ||h||, mean_j h_j / ||h_j|| >      mean_j <h, h_j> = < h, mean_j h_j >

which costs one read of the hidden states per layer (O(S*D)) instead of the O(T*|V|*D) similarity
matrix the reference release builds. The l1 distance summed over ``j`` splits by coordinate, and for
one coordinate, with the image values ``y_1 <= ... <= y_n`` sorted and ``k`` of them below ``x``,

    sum_j |x - y_j| = x (2k - n) - 2 (y_1 + ... + y_k) + (y_1 + ... + y_n)

so on an accelerator l1 costs a sort of the image tokens and a binary search per response value,
O((T + |V|) D log|V|), instead of ``torch.cdist``'s O(T |V| D) (whose CUDA kernel for p = 1 was the
slowest part of the prior in issue 15's report). On the CPU ``cdist`` stays: there its vectorised loop
beat the CPU's binary searches at the shapes of ``benchmarks/bench_core.py``. L2 has no such identity: it builds the
``(B, T, |V|)`` distance matrix, in chunks.

Everything is computed in float32 from float32 copies of the model's (possibly bf16) hidden states,
made a chunk at a time, sized in bytes per device (:mod:`pepo.core.chunking`): on a GPU a layer is
done whole, in a fixed handful of kernels, while it fits the budget. No step reads a tensor back to
the host per layer: the accumulator's one host read (which columns hold images, the most image tokens
in a row) is made once per forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pepo.core.checks import check_finite
from pepo.core.chunking import FLOAT_BYTES, default_chunk_bytes, positions_per_chunk

NORM_EPS = 1e-12  # x / max(||x||, 1e-12), as torch.nn.functional.normalize
L2_EPS = 1e-6  # inside the square root of the l2 distance (docs/method.md, Perception prior)


class SharedPrefixHidden:
    """One layer's ``(B, S, D)`` hidden states held in two parts, as a shared-prompt forward computes
    them: row ``b`` is ``cat(prefix[rows[b]], rest[b])`` along the positions, with ``prefix``
    ``(U, P, D)`` (each distinct prompt once) and ``rest`` ``(B, S - P, D)``. The accumulator reads
    the positions it needs from the parts, so the ``(B, S, D)`` tensor is never built (on a CPU,
    building it, fresh memory each layer, cost more than the score itself)."""

    def __init__(self, prefix: torch.Tensor, rows: torch.Tensor, rest: torch.Tensor):
        if prefix.dim() != 3 or rest.dim() != 3 or rows.shape != rest.shape[:1] or prefix.shape[2] != rest.shape[2]:
            raise ValueError(f"SharedPrefixHidden: prefix (U, P, D), rows (B,), rest (B, S - P, D) expected, got "
                             f"{tuple(prefix.shape)}, {tuple(rows.shape)}, {tuple(rest.shape)}")
        self.prefix, self.rows, self.rest = prefix, rows, rest
        self.shape = torch.Size((rest.shape[0], prefix.shape[1] + rest.shape[1], rest.shape[2]))
        self.device = rest.device

    def dim(self) -> int:
        return 3

    def positions(self, a: int, b: int) -> torch.Tensor:
        """``joined()[:, a:b]``, copying only the prefix positions asked for."""
        P = self.prefix.shape[1]
        if a >= P:
            return self.rest[:, a - P : b - P]
        if b <= P:
            return self.prefix[:, a:b][self.rows]
        return torch.cat([self.prefix[:, a:][self.rows], self.rest[:, : b - P]], dim=1)

    def gather_positions(self, index: torch.Tensor) -> torch.Tensor:
        """``(B, V, D)``: ``joined()[b, index[b, v]]``."""
        P = self.prefix.shape[1]
        from_prefix = self.prefix[self.rows.unsqueeze(1), index.clamp(max=P - 1)]
        if self.rest.shape[1] == 0:
            return from_prefix
        rows = torch.arange(index.shape[0], device=index.device).unsqueeze(1)
        from_rest = self.rest[rows, (index - P).clamp(0, self.rest.shape[1] - 1)]
        return torch.where((index < P).unsqueeze(-1), from_prefix, from_rest)

    def first_rows(self) -> torch.Tensor:
        """``(U,)``: the first row of each distinct prompt (rows of one prompt share its image tokens)."""
        B, U = self.rows.shape[0], self.prefix.shape[0]
        first = torch.full((U,), B - 1, dtype=self.rows.dtype, device=self.rows.device)
        return first.scatter_reduce_(0, self.rows, torch.arange(B, device=self.rows.device), "amin")

    def joined(self) -> torch.Tensor:
        """The ``(B, S, D)`` tensor (tests and callers that need it whole)."""
        return torch.cat([self.prefix[self.rows], self.rest], dim=1)


Hidden = torch.Tensor | SharedPrefixHidden


def _positions(hidden: Hidden, a: int, b: int) -> torch.Tensor:
    return hidden.positions(a, b) if isinstance(hidden, SharedPrefixHidden) else hidden[:, a:b]


def _float_slices(hidden: Hidden, start: int, stop: int, step: int):
    """Yield ``(offset, hidden[:, a:b].float())`` slices of ``step`` positions covering ``[start, stop)``."""
    for a in range(start, stop, step):
        yield a, _positions(hidden, a, min(a + step, stop)).float()


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _mean_similarity_to_image(
    hidden: Hidden, vision_weight: torch.Tensor, span: tuple[int, int], T: int, normalize: bool, chunk_bytes: int
) -> torch.Tensor:
    """``(B, T)`` float32 mean cosine (``normalize``) or dot product with the image tokens, one layer.
    ``vision_weight``: ``(B, S)`` float32, ``1/|V_b|`` on image tokens, 0 elsewhere."""
    B, S, D = hidden.shape
    step = positions_per_chunk(chunk_bytes, B * D * FLOAT_BYTES)
    image_rows, rows = hidden, None
    if isinstance(hidden, SharedPrefixHidden) and span[1] <= hidden.prefix.shape[1]:
        # the image tokens are in the shared prompts: each distinct prompt's target once, then one per row
        image_rows, rows = hidden.prefix, hidden.rows
        vision_weight = vision_weight[hidden.first_rows()]
    target = None  # (B or U, D): sum_j vision_weight[b, j] * (h_j or h_j / ||h_j||)
    for a, x in _float_slices(image_rows, span[0], span[1], step):
        w = vision_weight[:, a : a + x.shape[1]]
        if normalize:
            w = w / torch.linalg.vector_norm(x, dim=-1).clamp_min_(NORM_EPS)
        part = torch.bmm(w.unsqueeze(1), x).squeeze(1)
        target = part if target is None else target.add_(part)
    if rows is not None:
        target = target[rows]
    scores = []
    for _, x in _float_slices(hidden, S - T, S, step):
        score = torch.bmm(x, target.unsqueeze(-1)).squeeze(-1)  # (B, c)
        if normalize:
            score = score.div_(torch.linalg.vector_norm(x, dim=-1).clamp_min_(NORM_EPS))
        scores.append(score)
    return _concat(scores)


def _gather_image_tokens(hidden: Hidden, image_index: torch.Tensor) -> torch.Tensor:
    """``(B, Vmax, D)`` float32 hidden states of each row's image tokens (padding slots repeat index 0)."""
    if isinstance(hidden, SharedPrefixHidden):
        return hidden.gather_positions(image_index).float()
    D = hidden.shape[-1]
    return hidden.gather(1, image_index.unsqueeze(-1).expand(-1, -1, D)).float()


def _mean_l2_to_image(
    hidden: Hidden, image_index: torch.Tensor, image_valid_weight: torch.Tensor, T: int, chunk_bytes: int
) -> torch.Tensor:
    """``(B, T)`` float32 mean l2 distance to the image tokens, one layer. ``image_valid_weight``:
    ``(B, Vmax)``, ``1/|V_b|`` on a row's image slots, 0 on padding slots."""
    images = _gather_image_tokens(hidden, image_index)  # (B, Vmax, D)
    image_sq = images.square().sum(-1).unsqueeze(1)  # (B, 1, Vmax)
    B, S, D = hidden.shape
    step = positions_per_chunk(chunk_bytes, B * images.shape[1] * FLOAT_BYTES)  # the (B, c, Vmax) distances
    scores = []
    for _, x in _float_slices(hidden, S - T, S, step):
        # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 <a, b>: one fused matrix product, then in place;
        # the sum can round below 0, hence the clamp
        norms = x.square().sum(-1, keepdim=True) + image_sq  # (B, c, Vmax)
        dist = torch.baddbmm(norms, x, images.transpose(1, 2), alpha=-2.0)
        dist.clamp_min_(0.0).add_(L2_EPS).sqrt_()
        scores.append(torch.bmm(dist, image_valid_weight.unsqueeze(-1)).squeeze(-1))
    return _concat(scores)


def l1_by_sorting(device: torch.device) -> bool:
    """Whether l1 uses the sorted-prefix identity on ``device`` (accelerators) or ``cdist`` (CPU)."""
    return device.type != "cpu"


def _mean_l1_pairwise(
    hidden: Hidden, image_index: torch.Tensor, image_valid_weight: torch.Tensor, T: int, chunk_bytes: int
) -> torch.Tensor:
    """``(B, T)`` float32 mean l1 distance to the image tokens, one layer, from the ``(B, c, Vmax)``
    distance matrix (``torch.cdist``). ``image_valid_weight`` as :func:`_mean_l2_to_image`'s."""
    images = _gather_image_tokens(hidden, image_index)  # (B, Vmax, D)
    B, S, D = hidden.shape
    step = positions_per_chunk(chunk_bytes, B * (images.shape[1] + D) * FLOAT_BYTES)
    weight = image_valid_weight.unsqueeze(-1)
    return _concat([torch.bmm(torch.cdist(x, images, p=1.0), weight).squeeze(-1)
                    for _, x in _float_slices(hidden, S - T, S, step)])


def _mean_l1_to_image(
    hidden: Hidden, image_index: torch.Tensor, padding: torch.Tensor, count: torch.Tensor,
    row_weight: torch.Tensor, T: int, chunk_bytes: int,
) -> torch.Tensor:
    """``(B, T)`` float32 mean l1 distance to the image tokens, one layer, through sorted image values
    (module docstring). ``padding``: ``(B, Vmax, 1)`` bool, True on padding slots; ``count``:
    ``(B, 1, 1)`` float32 ``|V_b|``; ``row_weight``: ``(B, 1)`` float32, ``1/|V_b|`` (0: no image)."""
    B, S, D = hidden.shape
    images = _gather_image_tokens(hidden, image_index)  # (B, Vmax, D)
    # padding slots sort last (+inf): no response value counts them as below it, and the prefix sums
    # read at ranks <= |V_b| never reach them. The total is summed directly, so a NaN still shows.
    ordered = images.masked_fill(padding, torch.inf).transpose(1, 2).contiguous().sort(dim=-1).values  # (B, D, Vmax)
    prefix = torch.nn.functional.pad(ordered.cumsum(-1), (1, 0))  # (B, D, Vmax + 1): sums of the k smallest
    total = images.masked_fill_(padding, 0.0).sum(1).unsqueeze(-1)  # (B, D, 1)
    # per (b, d, position): x, its rank k (int64) and the prefix sum at k, plus arithmetic temporaries
    step = positions_per_chunk(chunk_bytes, B * D * 7 * FLOAT_BYTES)
    scores = []
    for a in range(S - T, S, step):
        # (B, D, c), a fresh copy (copy=True: never the caller's own float32 storage, written below)
        x = _positions(hidden, a, min(a + step, S)).transpose(1, 2)
        x = x.to(torch.float32, copy=True, memory_format=torch.contiguous_format)
        below = torch.searchsorted(ordered, x)  # (B, D, c) int64: image values < x
        # sum_j |x - y_j| = (total - n x) + 2 (k x - prefix_k)
        dist = torch.addcmul(total, count, x, value=-1.0).add_(x.mul_(below).sub_(prefix.gather(-1, below)), alpha=2.0)
        scores.append(dist.sum(1).mul_(row_weight))
    return _concat(scores)


PERCEPTION_MEASURES: tuple[str, ...] = ("cosine", "dot", "l2", "l1")


class PerceptionAccumulator:
    """:func:`perception_scores` fed one hidden-state tensor at a time, so that a caller can reduce each
    layer's output as soon as the model computes it and keep none of them:

        acc = PerceptionAccumulator(vision_mask, logits_to_keep, measure)
        for hidden in hidden_states:   # H^0 ... H^L, each (B, S, D)
            acc.add(hidden)
        v = acc.result()               # (B, T) float32, bit for bit perception_scores(hidden_states, ...)

    Arguments as :func:`perception_scores`. Holds only ``(B, T)`` and ``(B, S)`` tensors between calls.
    The constructor reads three numbers back from ``vision_mask``'s device (one host read per forward);
    :meth:`add` reads none.
    """

    @torch.no_grad()
    def __init__(
        self, vision_mask: torch.Tensor, logits_to_keep: int, measure: str = "cosine", chunk_bytes: int | None = None
    ):
        if measure not in PERCEPTION_MEASURES:
            raise ValueError(f"perception_scores: unknown measure {measure!r}; choose one of {PERCEPTION_MEASURES}")
        if vision_mask.dim() != 2:
            raise ValueError(f"perception_scores: vision_mask must be (B, S), got shape {tuple(vision_mask.shape)}")
        B, S = vision_mask.shape
        check_finite("perception_scores", "logits_to_keep", logits_to_keep)
        T = int(logits_to_keep)
        if not 0 < T <= S:
            raise ValueError(f"perception_scores: logits_to_keep must be in [1, S={S}], got {T}")
        if chunk_bytes is None:
            chunk_bytes = default_chunk_bytes(vision_mask.device)
        check_finite("perception_scores", "chunk_bytes", chunk_bytes)
        if chunk_bytes <= 0:
            raise ValueError(f"perception_scores: chunk_bytes must be > 0, got {chunk_bytes}")
        self.shape, self.T, self.layers = (B, S), T, 0
        self._D: int | None = None  # hidden size, from the first tensor added
        self.vision_mask = vision_mask.to(torch.bool)
        self._layer_score: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._total: torch.Tensor | None = None
        counts = self.vision_mask.sum(1)  # (B,)
        columns = self.vision_mask.any(0)
        positions = torch.arange(S, device=columns.device)
        # the one host read: first and last image column, most image tokens in a row
        first, last, vmax = torch.stack([
            torch.where(columns, positions, S).min(), torch.where(columns, positions, -1).max(), counts.max()
        ]).tolist()
        if vmax == 0:
            return  # no image in any row: no work per layer, zeros at the end
        inv_count = 1.0 / counts.clamp_min(1).float()  # rows without images: every term below is 0

        if measure in ("cosine", "dot"):
            span = (first, last + 1)  # only the positions holding image tokens
            vision_weight = self.vision_mask.float() * inv_count.unsqueeze(1)  # (B, S): 1/|V_b| on image tokens
            self._layer_score = lambda h: _mean_similarity_to_image(
                h, vision_weight.to(h.device), span, T, measure == "cosine", chunk_bytes
            )
            self._sign = 1.0
            return
        # stable sort puts each row's image positions first, in order: (B, Vmax) indices
        image_index = torch.sort((~self.vision_mask).to(torch.uint8), dim=1, stable=True).indices[:, :vmax]
        valid = torch.arange(vmax, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)  # (B, Vmax)
        image_valid_weight = valid.float() * inv_count.unsqueeze(1)  # 1/|V_b| on a row's image slots
        if measure == "l2":
            self._layer_score = lambda h: _mean_l2_to_image(
                h, image_index.to(h.device), image_valid_weight.to(h.device), T, chunk_bytes
            )
        elif not l1_by_sorting(vision_mask.device):
            self._layer_score = lambda h: _mean_l1_pairwise(
                h, image_index.to(h.device), image_valid_weight.to(h.device), T, chunk_bytes
            )
        else:
            padding = ~valid.unsqueeze(-1)  # (B, Vmax, 1)
            count = counts.clamp_min(1).float().view(B, 1, 1)  # a row without images: slot 0 stands in ...
            row_weight = (counts > 0).float().unsqueeze(1) * inv_count.unsqueeze(1)  # ... and weighs 0
            self._layer_score = lambda h: _mean_l1_to_image(
                h, image_index.to(h.device), padding.to(h.device), count.to(h.device), row_weight.to(h.device), T,
                chunk_bytes,
            )
        self._sign = -1.0

    @torch.no_grad()
    def add(self, hidden: Hidden) -> None:
        """Add one ``(B, S, D)`` hidden-state tensor (any float dtype; it is not kept), or the two
        parts of one (:class:`SharedPrefixHidden`): the same result, bit for bit."""
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
        score = self._layer_score(hidden)  # a fresh tensor: the first one becomes the running total
        self._total = score if self._total is None else self._total.add_(score)

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
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Visual similarity of every completion token to its row's image tokens.

    Args:
        hidden_states: ``L + 1`` tensors of shape ``(B, S, D)``, any float dtype (what a
            Hugging Face model returns with ``output_hidden_states=True``).
        vision_mask: ``(B, S)`` bool, True at image-placeholder positions (all images of a row).
        logits_to_keep: ``T``, the completion length; the last ``T`` positions are scored.
        measure: ``"cosine"`` (default, the paper's choice), ``"dot"``, ``"l2"`` or ``"l1"``
            (distances are negated so that larger always means closer).
        chunk_bytes: float32 scratch of one chunk, which bounds the extra memory; default
            :func:`default_chunk_bytes` of the hidden states' device (a whole layer per chunk on a GPU
            while it fits 256 MiB).

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
    accumulator = PerceptionAccumulator(vision_mask.to(hidden_states[0].device), logits_to_keep, measure, chunk_bytes)
    for hidden in hidden_states:
        accumulator.add(hidden)
    return accumulator.result()
