"""EntropyLMModule: trains the EntropyModel (a causal byte LM) alone."""

from __future__ import annotations

import math

import lightning as L
import torch

from blcm.lightning.config import ExportsItsModel, save_grouped_hparams
from blcm.lightning.optim import OptimConfig, adamw_warmup_cosine, check_finite
from blcm.plotting import log_entropy_figure
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import OFFSET


class EntropyLMModule(ExportsItsModel, L.LightningModule):
    """Trains the EntropyModel and logs bits per byte to TensorBoard.

    Args:
        model: the EntropyModel's shape.
        optim: AdamW with warm-up + cosine.
        export_dir: where the trained model is exported (config.json + model.safetensors) at the end of fit.
        target_patch_size: the mean patch size the logged entropy/patch figure is calibrated to.
        init_from: an exported model directory to start from (its config must match), e.g. to
            `blcm validate` an export or to fine-tune one.
    """

    def __init__(self, model: EntropyModelConfig = EntropyModelConfig(),
                 optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=200), export_dir: str | None = None,
                 target_patch_size: float = 4.5, init_from: str | None = None):
        super().__init__()
        save_grouped_hparams(self, model=model, optim=optim)
        self.optim = optim
        self.model = EntropyModel(model)
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
        ids = window[window >= OFFSET][:192][None]  # (1, L) bytes only
        log_entropy_figure(self.logger, "val/entropy_patches", self.model, ids, self.global_step,
                           target_patch_size=self.hparams.target_patch_size)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.model, self.optim)
