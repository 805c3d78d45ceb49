"""What the ByteLCM learns from, and how much: the stages, the loss configuration (part of the model's config)
and the weighted total ``ByteLCM.losses`` returns.

    loss = reconstruction_weight · CE(decoder(noise(c)), unit bytes)
         + core_weight · core loss on each window's concept sequence [c_1 .. c_n, c_EOD]
         + entropy_weight · entropy-model CE (after its own stage, only when > 0)
         + alignment_weight · InfoNCE(mean concept of a paired file, of its transcript) (when pairs are given)

In the entropy stage the entropy model's CE is the whole loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from blcm import ConfigError

Stage = Literal["entropy", "autoencoder", "joint"]
STAGES: tuple[Stage, ...] = ("entropy", "autoencoder", "joint")


@dataclass(frozen=True)
class LossConfig:
    """The loss terms' weights and what the terms see.

    Args:
        reconstruction_weight: the weight of the decoder's cross-entropy.
        core_weight: the weight of the core's loss.
        entropy_weight: the weight of the entropy model's cross-entropy after the entropy stage (in it, that
            loss is the whole loss).
        concept_noise: std of the Gaussian noise added to concepts (unit RMS) before decoding, so
            that nearby concepts (as a generated one is) decode to the same bytes.
        concept_dropout: dropout on the concept before decoding.
        detach_core_inputs: stop the core loss's gradient into the encoder through the context concepts.
        detach_core_targets: stop it through the predicted concepts. Targets are detached by default: with
            live targets the encoder learns to make concepts trivially predictable (on en, copy-last l2 fell
            from 19 to 2.5 within 100 joint steps and the decoder's bits per byte rose).
        alignment_weight: the weight of the alignment term (0: off; the pairs are the module's ``alignment``).
        alignment_temperature: its InfoNCE temperature.
    """

    reconstruction_weight: float = 1.0
    core_weight: float = 1.0
    entropy_weight: float = 0.0
    # what the decoder reads in training
    concept_noise: float = 0.1
    concept_dropout: float = 0.0
    # where the core's gradient stops
    detach_core_inputs: bool = False
    detach_core_targets: bool = True
    # cross-modal alignment
    alignment_weight: float = 0.0
    alignment_temperature: float = 0.1

    def __post_init__(self):
        if self.concept_noise < 0 or not 0 <= self.concept_dropout < 1:
            raise ConfigError(f"need concept_noise >= 0 and 0 <= concept_dropout < 1, got {self.concept_noise}, "
                             f"{self.concept_dropout}")
        if self.alignment_weight < 0 or not self.alignment_temperature > 0:
            raise ConfigError(f"need alignment_weight >= 0 and alignment_temperature > 0, got "
                              f"{self.alignment_weight}, {self.alignment_temperature}")

    def weight(self, term: str, stage: Stage) -> float:
        if term == "entropy" and stage == "entropy":
            return 1.0
        return {"reconstruction": self.reconstruction_weight, "core": self.core_weight,
                "entropy": self.entropy_weight, "alignment": self.alignment_weight}[term]

    def decoder_inputs(self, concepts: torch.Tensor, training: bool) -> torch.Tensor:
        """Concepts (T, d) as the decoder reads them in training: dropped out, then noised."""
        noisy = F.dropout(concepts, self.concept_dropout, training)
        if training and self.concept_noise > 0:
            noisy = noisy + self.concept_noise * torch.randn_like(noisy)
        return noisy


class Losses(NamedTuple):
    """What ``ByteLCM.losses`` returns: the weighted total (None: nothing to learn from in this batch) and the
    unweighted terms, for logging."""

    total: torch.Tensor | None
    terms: dict[str, torch.Tensor]

    @classmethod
    def weighted(cls, terms: dict[str, torch.Tensor], stage: Stage, config: LossConfig) -> Losses:
        total = sum(config.weight(name, stage) * value for name, value in terms.items()) if terms else None
        return cls(total, terms)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of paired vectors a (P, d), b (P, d): row i of a should be
    nearest (cosine) to row i of b among all rows of b, and back; the other rows are the negatives."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # (P, P)
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
