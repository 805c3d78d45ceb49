"""Document-level generation: append concepts until the end-of-document concept, a repetition, or a limit.

One loop, ``iter_steps``, serves every caller: ``generate`` below (concepts in, concepts out) and
ByteLCM (whose hooks decode each concept to bytes and re-encode those bytes into the context).
Every row is generated at once through the model's ``start`` / ``extend`` / ``sample`` (the
context is read once, then extended by one concept per step). A row that stops keeps riding
along in the batch, masked, until every row has stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from concept_core.interface import ConceptInputError, ConceptModel, Sampling, check_concepts, left_align

# concepts (B, d) -> (what they decode to, (B,) bool: True where that is usable; False stops the row)
Decode = Callable[[torch.Tensor], tuple[Any, torch.Tensor]]
# what ``Decode`` made of a step -> (B, d) the concepts the context is extended with instead of the samples
Reencode = Callable[[Any], torch.Tensor]


@dataclass
class StopRule:
    """A row stops at the first new concept within ``eod_threshold`` cosine of ``eod`` ("eod"), or within
    ``repetition_threshold`` of the row's previous concept ("repetition"); None turns a check off."""

    eod: torch.Tensor | None = None  # (d,)
    eod_threshold: float = 0.9
    repetition_threshold: float | None = 0.99

    def check(self, dim: int) -> None:
        if self.eod is not None and (self.eod.shape != (dim,) or not torch.isfinite(self.eod).all()):
            raise ConceptInputError(f"eod must be a finite concept of shape ({dim},), got {tuple(self.eod.shape)}")

    def hits(self, new: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) new and previous concepts -> (B,) is_eod, (B,) is_repetition."""
        none = new.new_zeros(len(new), dtype=torch.bool)
        is_eod, is_repeat = none, none
        if self.eod is not None:
            is_eod = F.cosine_similarity(new, self.eod.to(new)[None], dim=-1) >= self.eod_threshold
        if self.repetition_threshold is not None:
            is_repeat = F.cosine_similarity(new, previous, dim=-1) >= self.repetition_threshold
        return is_eod, is_repeat


@dataclass
class Step:
    concepts: torch.Tensor  # (B, d) this step's samples
    kept: torch.Tensor  # (B,) True where the sample continues its row (False once a row has stopped)
    stopped: list[str | None]  # per row, why it stopped at this step: "eod", "repetition", "undecodable"
    decoded: Any = None  # what ``decode`` made of the samples (None without a decode hook)


@torch.no_grad()
def iter_steps(model: ConceptModel, prompt: torch.Tensor, prompt_mask: torch.Tensor | None = None, *,
               max_new: int, stop: StopRule, sampling: Sampling | None = None,
               generator: torch.Generator | None = None, decode: Decode | None = None,
               reencode: Reencode | None = None) -> Iterator[Step]:
    """Continue each prompt (B, N, d) one step at a time, at most ``max_new`` steps, until every row stops.

    ``decode`` turns each step's samples into their final form (and may refuse one: "undecodable");
    ``reencode`` gives the concepts of that form, which extend the context in place of the samples (rows
    that stopped ride along: any finite concept will do for them). The context is extended only when
    another step is asked for, and never after the last one.
    """
    prompt_mask = check_concepts(prompt, prompt_mask, model.concept_dim)
    stop.check(model.concept_dim)
    if max_new < 1:
        raise ValueError(f"max_new must be at least 1, got {max_new}")
    sampling = sampling or Sampling()
    prompt, prompt_mask = left_align(prompt, prompt_mask)
    state = model.start(prompt, prompt_mask)
    previous = prompt[:, -1]  # (B, d) each row's last concept
    active = torch.ones(len(prompt), dtype=torch.bool, device=prompt.device)  # (B,)
    for step in range(max_new):
        new = model.sample(state, sampling, generator)  # (B, d)
        is_eod, is_repeat = stop.hits(new, previous)
        kept = active & ~is_eod & ~is_repeat
        decoded, usable = None, kept
        if decode is not None and kept.any():
            decoded, usable = decode(new)
        yield Step(new, kept & usable, stop_reasons(active, is_eod, is_repeat, usable), decoded)
        active = kept & usable
        if not active.any() or step + 1 == max_new:
            return
        previous = new if reencode is None else reencode(decoded)
        state = model.extend(state, previous)


def stop_reasons(active: torch.Tensor, is_eod: torch.Tensor, is_repeat: torch.Tensor,
                 usable: torch.Tensor) -> list[str | None]:
    """(B,) flags -> per row, why a row still active stops at this step (None: it goes on, or had stopped)."""
    reasons: list[str | None] = []
    for row in range(len(active)):
        if not active[row]:
            reasons.append(None)
        elif is_eod[row] or is_repeat[row]:
            reasons.append("eod" if is_eod[row] else "repetition")
        else:
            reasons.append(None if usable[row] else "undecodable")
    return reasons


@dataclass
class GenerationOutput:
    concepts: torch.Tensor  # (B, M, d) the generated concepts only, right-padded with zeros
    mask: torch.Tensor  # (B, M) True on each row's generated concepts
    stop_reason: list[str]  # per row: "eod", "repetition" or "max_length"


def generate(model: ConceptModel, prompt: torch.Tensor, prompt_mask: torch.Tensor | None = None,
             eod: torch.Tensor | None = None, max_new: int = 32, eod_threshold: float = 0.9,
             repetition_threshold: float | None = 0.99, sampling: Sampling | None = None,
             generator: torch.Generator | None = None) -> GenerationOutput:
    """Continue each prompt (B, N, d) with at most ``max_new`` concepts.

    A row stops at the first new concept whose cosine to ``eod`` is >= ``eod_threshold`` ("eod"), or
    whose cosine to the row's previous concept is >= ``repetition_threshold`` ("repetition"); that
    concept is left out of the output. Otherwise it stops after ``max_new`` concepts ("max_length").
    """
    stop_reason = ["max_length"] * len(prompt)
    new_concepts, new_mask = [], []
    for step in iter_steps(model, prompt, prompt_mask, max_new=max_new, sampling=sampling, generator=generator,
                           stop=StopRule(eod, eod_threshold, repetition_threshold)):
        for row, reason in enumerate(step.stopped):
            stop_reason[row] = reason or stop_reason[row]
        new_concepts.append(step.concepts.masked_fill(~step.kept[:, None], 0.0))
        new_mask.append(step.kept)
    # The last step may hold only stopping concepts (left out): cut it; M is 0 when all rows stop at once.
    mask = torch.stack(new_mask, dim=1)  # (B, steps)
    m = int(mask.sum(1).max())
    return GenerationOutput(torch.stack(new_concepts, dim=1)[:, :m], mask[:, :m], stop_reason)
