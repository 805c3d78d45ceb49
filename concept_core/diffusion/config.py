"""The diffusion settings the One-Tower and Two-Tower LCMs share, and the scheduler they make."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from concept_core.diffusion.ddim import DDIMScheduler


@dataclass(kw_only=True)
class DiffusionConfig:
    """Keyword-only, so a variant's own fields keep their positions in its config."""

    num_train_timesteps: int = 100
    schedule: str = "cosine"
    zero_terminal_snr: bool = True
    prediction_type: str = "sample"  # "sample" (x0, as Meta), "epsilon" or "v_prediction"
    cfg_dropout: float = 0.15  # share of training positions that see no context (classifier-free guidance)

    def scheduler(self) -> DDIMScheduler:
        # The schedule is T numbers on the CPU (moved per call), even when the model is built on the meta device.
        with torch.device("cpu"):
            return DDIMScheduler(self.num_train_timesteps, self.schedule, self.zero_terminal_snr, self.prediction_type)
