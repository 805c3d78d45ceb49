"""The optimiser both LightningModules use: AdamW with a linear warm-up and a cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch

from blcm import ConfigError


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (betas 0.9, 0.95; no decay on norms and biases) with a per-step warm-up + cosine schedule.
    ``--optimizer`` / ``--lr_scheduler`` on the command line replace it.

    Args:
        lr: the peak learning rate.
        weight_decay: AdamW's, on matrices only.
        warmup_steps: steps of linear warm-up.
        decay_steps: the cosine's length; None: the trainer's max_steps when set, else constant after warm-up.
        min_lr_ratio: where the cosine ends, as a share of ``lr``.
    """

    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"need lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, "
                             f"{self.warmup_steps}, {self.min_lr_ratio}")


def warmup_cosine(step: int, warmup: int, decay_steps: int | None, min_ratio: float) -> float:
    """LR multiplier: linear warm-up, then cosine down to ``min_ratio`` over ``decay_steps`` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay_steps or decay_steps <= warmup:
        return 1.0
    progress = min((step - warmup) / (decay_steps - warmup), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_warmup_cosine(module: L.LightningModule, model: torch.nn.Module, optim: OptimConfig) -> dict:
    """``configure_optimizers``' answer for ``model``'s trainable parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:  # a frozen part (freeze_codec) is not the optimiser's
            (decay if p.ndim >= 2 else no_decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr, betas=(0.9, 0.95))
    max_steps = module.trainer.max_steps
    decay_steps = optim.decay_steps or (max_steps if max_steps > 0 else None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, optim.warmup_steps, decay_steps, optim.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def check_finite(loss: torch.Tensor, step: int, term: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: the {term} loss is {loss.item()}; stopping")
