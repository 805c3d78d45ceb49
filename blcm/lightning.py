"""LightningModules. Only blcm imports Lightning; the models themselves live in blt/ and concept_core/."""

from __future__ import annotations

import math

import lightning as L
import torch

from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import OFFSET
from blt.patching import Patcher


def warmup_cosine(step: int, warmup: int, decay_steps: int | None, min_ratio: float) -> float:
    """LR multiplier: linear warm-up, then cosine down to ``min_ratio`` over ``decay_steps`` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if not decay_steps or decay_steps <= warmup:
        return 1.0
    progress = min((step - warmup) / (decay_steps - warmup), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def check_finite(loss: torch.Tensor, step: int, term: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: the {term} loss is {loss.item()}; stopping")


class EntropyLMModule(L.LightningModule):
    """Trains the EntropyModel (a causal byte LM) and logs bits per byte to TensorBoard.

    Args:
        dim, n_layers, n_heads, context, window, backend: the EntropyModelConfig.
        lr, weight_decay, warmup_steps, decay_steps, min_lr_ratio: AdamW with warm-up + cosine.
            ``decay_steps`` None: the trainer's max_steps when set, else a constant LR after warm-up.
        export_dir: where the trained model is exported (config.json + model.safetensors) at the end of fit.
        target_patch_size: the mean patch size the logged entropy/patch figure is calibrated to.
        init_from: an exported model directory to start from (its config must match), e.g. to
            `blcm validate` an export or to fine-tune one.
    """

    def __init__(self, dim: int = 128, n_layers: int = 4, n_heads: int = 4, context: int = 256,
                 window: int | None = None, backend: str = "auto", lr: float = 3e-3, weight_decay: float = 0.1,
                 warmup_steps: int = 200, decay_steps: int | None = None, min_lr_ratio: float = 0.1,
                 export_dir: str | None = None, target_patch_size: float = 4.5, init_from: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = EntropyModel(EntropyModelConfig(dim, n_layers, n_heads, context, window, backend))
        if init_from is not None:
            self.model.load_state_dict(EntropyModel.from_pretrained(init_from).state_dict())
        self._val_nats = self._val_bytes = 0.0

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)  # batch (B, L+1)
        check_finite(loss, self.global_step, "entropy-model")
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bpb", loss / math.log(2))
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        nats, num_bytes = self.model.nats_and_bytes(batch)
        self._val_nats += float(nats)
        self._val_bytes += float(num_bytes)
        if batch_idx == 0 and self.trainer.is_global_zero:
            self._log_patch_figure(batch[0])

    def on_validation_epoch_end(self) -> None:
        totals = self.all_gather(torch.tensor([self._val_nats, self._val_bytes], dtype=torch.float64))
        totals = totals.reshape(-1, 2).sum(0)
        if totals[1] > 0:
            self.log("val/bpb", (totals[0] / totals[1] / math.log(2)).float(), prog_bar=True, sync_dist=False)
        self._val_nats = self._val_bytes = 0.0

    def _log_patch_figure(self, window: torch.Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_figure"):
            return
        ids = window[window >= OFFSET][:192][None]  # (1, L) bytes only
        if ids.shape[1] < 16:
            return
        lengths = torch.tensor([ids.shape[1]], device=ids.device)
        entropies = self.model.entropies(ids, lengths)
        patcher = Patcher("entropy")
        try:
            threshold = patcher.calibrate(ids, lengths, entropies, self.hparams.target_patch_size)
        except ValueError:
            return  # an untrained model can be too flat to reach the target; nothing worth drawing
        starts = patcher(ids, lengths, entropies, threshold).starts[0]
        from blcm.plotting import entropy_figure

        data = bytes((ids[0] - OFFSET).tolist())
        fig = entropy_figure(data, entropies[0].cpu().numpy(), starts.cpu().numpy(), threshold)
        experiment.add_figure("val/entropy_patches", fig, global_step=self.global_step)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)
        hp = self.hparams
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=(0.9, 0.95))
        decay_steps = hp.decay_steps or (self.trainer.max_steps if self.trainer.max_steps > 0 else None)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, hp.warmup_steps, decay_steps, hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            path = self.model.save_pretrained(self.hparams.export_dir)
            print(f"exported the entropy model to {path}")
