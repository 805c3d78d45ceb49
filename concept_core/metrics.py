"""Concept-space metrics of next-concept prediction, as the LCM paper defines them (Section 2.4.1).

- l2: ‖ĉ - c‖, the distance of the prediction to the true next concept.
- contrastive accuracy (CA): the share of other in-batch concepts that are farther from ĉ than c
  is; 1 means the prediction picks out its own target, 0.5 is chance. The target itself and its
  two neighbours in the document are left out: adjacent concepts are often near-duplicates.
- paraphrasing ratio (PAR): max cosine of ĉ to the context over the same for the true c; above 1,
  the model leans on copying the context more than the data does.

And of a concept space itself, ``dispersion``: how spread out a set of concepts is (a collapsed encoder's are
not).

All functions are batched over items; rows where a metric is undefined (no candidates, no context)
give NaN, which ``summary`` leaves out of its means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from concept_core.interface import Sampling


def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., d), (..., d) -> (...): Euclidean distance per item."""
    return torch.linalg.vector_norm(pred - target, dim=-1)


def neighbour_mask(n: int, doc_ids: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
    """(n, n) bool: True where j is i itself or i ± 1 in the same document (all one document without ids)."""
    idx = torch.arange(n, device=device)
    near = (idx[:, None] - idx[None, :]).abs() <= 1  # (n, n)
    if doc_ids is not None:
        near &= doc_ids[:, None] == doc_ids[None, :]
    return near


def contrastive_accuracy(pred: torch.Tensor, target: torch.Tensor, neighbours: torch.Tensor | None = None,
                         doc_ids: torch.Tensor | None = None) -> torch.Tensor:
    """CA per item: (n, d), (n, d) -> (n,).

    For each i, the share of candidates c_j with ‖ĉ_i - c_j‖ > ‖ĉ_i - c_i‖, where the candidates are
    all in-batch targets except c_i and its neighbours. Items are in document order; ``doc_ids`` (n,)
    says which document each comes from, so i - 1 and i + 1 are neighbours only within a document.
    ``neighbours`` (n, n) bool, instead of ``doc_ids``, names the excluded pairs outright (True =
    excluded; c_i itself is always excluded). A row with no candidates gives NaN."""
    n = pred.shape[0]
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be (n, d), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if neighbours is not None and doc_ids is not None:
        raise ValueError("give neighbours or doc_ids, not both")
    if neighbours is not None:
        if neighbours.shape != (n, n) or neighbours.dtype != torch.bool:
            raise ValueError(f"neighbours must be an ({n}, {n}) bool mask (pass document ids as doc_ids=), "
                             f"got {neighbours.dtype} {tuple(neighbours.shape)}")
        excluded = neighbours | torch.eye(n, dtype=torch.bool, device=pred.device)
    else:
        if doc_ids is not None and doc_ids.shape != (n,):
            raise ValueError(f"doc_ids must be ({n},), got {tuple(doc_ids.shape)}")
        excluded = neighbour_mask(n, doc_ids, pred.device)
    # The direct formula, not the matmul expansion, so ĉ_i == c_i gives a distance of exactly 0.
    dist = torch.cdist(pred.float(), target.float(), compute_mode="donot_use_mm_for_euclid_dist")  # (n, n)
    own = dist.diagonal()[:, None]  # (n, 1)
    candidates = ~excluded
    farther = ((dist > own) & candidates).sum(1)
    return farther / candidates.sum(1)  # 0/0 = NaN where there is no candidate


def context_cosine(x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    """max_j cos(x, context_j) over the valid context concepts: (B, d), (B, N, d), (B, N) bool -> (B,);
    NaN for a row with no valid context."""
    if context.ndim != 3 or context.shape[0] != x.shape[0] or context_mask.shape != context.shape[:2]:
        raise ValueError(f"expected context (B, N, d) and mask (B, N) for B = {x.shape[0]}, "
                         f"got {tuple(context.shape)} and {tuple(context_mask.shape)}")
    cos = torch.einsum("bd,bnd->bn", F.normalize(x.float(), dim=-1), F.normalize(context.float(), dim=-1))
    best = cos.masked_fill(~context_mask, float("-inf")).amax(-1)  # (B,)
    return best.masked_fill(~context_mask.any(-1), float("nan"))


def paraphrasing_ratio(pred: torch.Tensor, true: torch.Tensor, context: torch.Tensor,
                       context_mask: torch.Tensor) -> torch.Tensor:
    """PAR per row: (B, d), (B, d), (B, N, d), (B, N) bool -> (B,).

    max_j cos(ĉ, context_j) / max_j cos(c, context_j) over the valid context concepts; NaN for a row
    with no valid context. Per row the denominator can be near 0 (centred concepts): over a set,
    divide the mean ``context_cosine`` of the predictions by that of the targets instead."""
    if pred.shape != true.shape:
        raise ValueError(f"pred and true shapes differ: {tuple(pred.shape)} vs {tuple(true.shape)}")
    return context_cosine(pred, context, context_mask) / context_cosine(true, context, context_mask)


def dispersion(concepts: torch.Tensor) -> dict[str, float]:
    """(U, d) -> the mean cosine between distinct concepts, the mean and smallest per-dimension variance."""
    unit = F.normalize(concepts.float(), dim=-1)
    cosines = unit @ unit.T  # (U, U)
    n = len(concepts)
    off_diagonal = (cosines.sum() - cosines.diagonal().sum()) / max(n * (n - 1), 1)
    variance = concepts.float().var(0, unbiased=False) if n > 1 else torch.zeros(concepts.shape[1])
    return {"mean_cosine": float(off_diagonal), "dim_variance": float(variance.mean()),
            "min_dim_variance": float(variance.min())}


@dataclass
class TeacherForced:
    """Next-concept predictions for every concept k >= 1 of every document, each from the true concepts < k."""

    pred: torch.Tensor  # (P, d)
    target: torch.Tensor  # (P, d) c_k
    previous: torch.Tensor  # (P, d) c_{k-1}, the copy-last baseline
    doc: torch.Tensor  # (P,) the document (row of the batch)
    position: torch.Tensor  # (P,) k


@torch.no_grad()
def teacher_forced_predictions(core, sequences: torch.Tensor, mask: torch.Tensor, sampling: Sampling,
                               generator: torch.Generator | None = None, batch_size: int = 256) -> TeacherForced:
    """The core's prediction of each concept from the ones before it: sequences (B, N, d), mask (B, N)
    left-aligned. Predictions are made ``batch_size`` prefixes at a time."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    doc, k = (mask & (positions >= 1)).nonzero(as_tuple=True)  # (P,), (P,)
    prefix_mask = mask[doc] & (positions < k[:, None])  # (P, N)
    chunks = [core.predict_next(sequences[doc[s : s + batch_size]], prefix_mask[s : s + batch_size], sampling,
                                generator) for s in range(0, len(doc), batch_size)]
    pred = torch.cat(chunks) if chunks else sequences.new_zeros(0, sequences.shape[-1])
    return TeacherForced(pred, sequences[doc, k], sequences[doc, k - 1], doc, k)
