"""Lightning callbacks of the project."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class CheckpointOnTrainEnd(L.Callback):
    """Write ``last.ckpt`` when fit ends. ModelCheckpoint saves only every N steps, so a run stopped
    by max_steps or max_time would otherwise lose the steps after the last multiple of N."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        callback = trainer.checkpoint_callback
        if callback is not None and callback.dirpath and trainer.global_step > 0:
            trainer.save_checkpoint(Path(callback.dirpath) / "last.ckpt")
