"""Document-level generation: append concepts until the end-of-document concept, a repetition, or a limit.

Every row is generated at once through the model's ``start`` / ``extend`` / ``sample`` (the
context is read once, then extended by one concept per step). A row that stops keeps riding
along in the batch, masked, until every row has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from concept_core.interface import ConceptInputError, ConceptModel, Sampling, check_concepts, left_align


@dataclass
class GenerationOutput:
    concepts: torch.Tensor  # (B, M, d) the generated concepts only, right-padded with zeros
    mask: torch.Tensor  # (B, M) True on each row's generated concepts
    stop_reason: list[str]  # per row: "eod", "repetition" or "max_length"


@torch.no_grad()
def generate(model: ConceptModel, prompt: torch.Tensor, prompt_mask: torch.Tensor | None = None,
             eod: torch.Tensor | None = None, max_new: int = 32, eod_threshold: float = 0.9,
             repetition_threshold: float | None = 0.99, sampling: Sampling | None = None,
             generator: torch.Generator | None = None) -> GenerationOutput:
    """Continue each prompt (B, N, d) with at most ``max_new`` concepts.

    A row stops at the first new concept whose cosine to ``eod`` is >= ``eod_threshold`` ("eod"), or
    whose cosine to the row's previous concept is >= ``repetition_threshold`` ("repetition"); that
    concept is left out of the output. Otherwise it stops after ``max_new`` concepts ("max_length").
    """
    prompt_mask = check_concepts(prompt, prompt_mask, model.dim)
    if eod is not None and (eod.shape != (model.dim,) or not torch.isfinite(eod).all()):
        raise ConceptInputError(f"eod must be a finite concept of shape ({model.dim},), got {tuple(eod.shape)}")
    if max_new < 1:
        raise ValueError(f"max_new must be at least 1, got {max_new}")
    sampling = sampling or Sampling()

    prompt, prompt_mask = left_align(prompt, prompt_mask)
    state = model.start(prompt, prompt_mask)
    previous = prompt[:, -1]  # (B, d) each row's last concept
    active = torch.ones(len(prompt), dtype=torch.bool, device=prompt.device)  # (B,)
    stop_reason = ["max_length"] * len(prompt)
    new_concepts, new_mask = [], []
    for step in range(max_new):
        if step:
            state = model.extend(state, previous)
        new = model.sample(state, sampling, generator)  # (B, d)
        is_eod = torch.zeros_like(active)
        if eod is not None:
            is_eod = F.cosine_similarity(new, eod.to(new)[None], dim=-1) >= eod_threshold
        is_repeat = torch.zeros_like(active)
        if repetition_threshold is not None:
            is_repeat = F.cosine_similarity(new, previous, dim=-1) >= repetition_threshold
        for row in (active & (is_eod | is_repeat)).nonzero().flatten().tolist():
            stop_reason[row] = "eod" if is_eod[row] else "repetition"
        active = active & ~is_eod & ~is_repeat
        new_concepts.append(new.masked_fill(~active[:, None], 0.0))
        new_mask.append(active)
        if not active.any():
            break
        previous = new
    # The last step may hold only stopping concepts (left out): cut it; M is 0 when all rows stop at once.
    mask = torch.stack(new_mask, dim=1)  # (B, steps)
    m = int(mask.sum(1).max())
    return GenerationOutput(torch.stack(new_concepts, dim=1)[:, :m], mask[:, :m], stop_reason)
