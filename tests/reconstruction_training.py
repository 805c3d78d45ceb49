"""The loop the codec tests train a decoder with: its nats per byte (the closing EOS included) on a few units."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from blt.ids import pad_batch


def train_reconstruction(parameters: Iterable[torch.nn.Parameter], decoder: Callable, units: list[bytes],
                         concepts_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int,
                         optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW, lr: float = 3e-3) -> list[float]:
    """``steps`` optimiser steps on ``parameters`` for ``decoder``'s loss on ``units`` given ``concepts_of(ids,
    lengths)``; the loss before each step."""
    ids, lengths = pad_batch(units)
    opt = optimizer(list(parameters), lr=lr)
    losses = []
    for _ in range(steps):
        scores = decoder(ids, lengths, concepts_of(ids, lengths))
        loss = scores.nats.sum() / (lengths + 1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
