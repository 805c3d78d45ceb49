"""Lightning callbacks and the checkpoint-writing plugin of the project."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from primitives.atomic import atomic_file


class CheckpointOnTrainEnd(L.Callback):
    """Write ``last.ckpt`` when fit ends. ModelCheckpoint saves only every N steps, and at the end of
    training only when it has saved nothing yet, so a run stopped by max_steps or max_time would
    otherwise lose the steps after the last multiple of N."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        callback = trainer.checkpoint_callback
        # With nothing saved yet, ModelCheckpoint's own on_train_end (it runs after this one) writes last.ckpt.
        if callback is not None and callback.dirpath and callback.last_model_path and trainer.global_step > 0:
            trainer.save_checkpoint(Path(callback.dirpath) / "last.ckpt", weights_only=False)  # a full, resumable one


class ParameterCount(L.Callback):
    """One line when fit starts, in place of Lightning's model summary table (whose FLOPs column reads 0 for a
    module without an example input): "ByteLCM: 6.9 M parameters (5.7 M trainable)". The name is the model's
    export kind (ByteLCM, EntropyModel), else the LightningModule's class. `blcm fit` adds it to every run."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(parameter_count_line(pl_module))


def parameter_count_line(module: torch.nn.Module) -> str:
    params = list(module.parameters())  # shared parameters once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    name = getattr(getattr(module, "model", None), "export_kind", None) or type(module).__name__
    return f"{name}: {human_count(total)} parameters ({human_count(trainable)} trainable)"


def human_count(n: int) -> str:
    """1234 -> "1.2 K", 6_900_000 -> "6.9 M"; below a thousand the number itself."""
    if n < 1000:
        return str(n)
    # the largest unit the number rounds to at least one of: 999_960 -> "1.0 M", not "1000.0 K"
    unit, scale = next((u, s) for u, s in (("B", 10**9), ("M", 10**6), ("K", 10**3)) if round(n / s, 1) >= 1)
    return f"{n / scale:.1f} {unit}"


class TrainingClock(L.Callback):
    """Training minutes: counted from the first batch, paused during validation and after fit, kept in
    the checkpoint so that they survive a resume. The one clock of MetricsHistory and Snapshots."""

    def __init__(self):
        self.minutes = 0.0
        self._since = None

    def trained_minutes(self) -> float:
        running = (time.monotonic() - self._since) / 60 if self._since is not None else 0.0
        return self.minutes + running

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause()

    def on_train_end(self, trainer, pl_module) -> None:
        self._pause()

    def _pause(self) -> None:
        self.minutes = self.trained_minutes()
        self._since = None

    def _exclude(self, seconds: float) -> None:
        """Take ``seconds`` of the callback's own work (an export) off the running clock."""
        if self._since is not None:
            self._since += seconds

    def state_dict(self) -> dict:
        return {"minutes": self.trained_minutes()}  # checkpoints are written mid-segment: the running part counts

    def load_state_dict(self, state_dict: dict) -> None:
        self.minutes = state_dict["minutes"]


class MetricsHistory(TrainingClock):
    """Append every validation's metrics, with the step and the training minutes so far, to
    ``<log_dir>/metrics.jsonl``: the metric-vs-minutes curve."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero or log_dir is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        record = {"step": trainer.global_step, "minutes": round(self.minutes, 3), **metrics}
        path = Path(log_dir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class Snapshots(TrainingClock):
    """Export the model every ``every_minutes`` of training time (validation and the exports themselves not
    counted) to ``<log_dir>/snapshots/step-NNNNNNN/``, with ``snapshot.json``: step, training minutes and the
    unit bytes trained so far (this rank's times the world size). The learning curve is measured afterwards,
    on other cores or another machine, from these exports (benchmarks/codec_curve.py), so measuring never
    slows the run it measures. Rank 0 decides and exports alone: no collective call on the way.

    The model must have ``save_pretrained`` and a ``codec``: ByteLCMModule's ``model`` does. Nothing is exported
    while the codec is not ready (an entropy stage: no threshold yet).
    """

    def __init__(self, every_minutes: float = 5.0):
        super().__init__()
        if not every_minutes > 0:
            raise ValueError(f"every_minutes must be > 0, got {every_minutes}")
        self.every_minutes = every_minutes
        self.next_at = 0.0
        self.bytes = 0  # up to the last export; the batches since are summed on their device (no sync a step)
        self._unsynced: torch.Tensor | None = None
        self._log_dir: str | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._log_dir = trainer.log_dir  # a broadcast under DDP: asked once, here, where every rank asks it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step_bytes = batch.unit_lengths.sum() * trainer.world_size
        self._unsynced = step_bytes if self._unsynced is None else self._unsynced + step_bytes
        if self.trained_minutes() >= self.next_at:
            self._export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._export(trainer, pl_module)  # the end of the run is always on the curve

    def trained_bytes(self) -> int:
        if self._unsynced is not None:
            self.bytes, self._unsynced = self.bytes + int(self._unsynced), None
        return self.bytes

    def _export(self, trainer, pl_module) -> None:
        minutes = self.trained_minutes()
        self.next_at = (minutes // self.every_minutes + 1) * self.every_minutes
        if not trainer.is_global_zero or self._log_dir is None or not pl_module.model.codec.ready:
            return  # during an entropy stage there are no concepts to measure yet
        started = time.monotonic()
        path = Path(self._log_dir) / "snapshots" / f"step-{trainer.global_step:07d}"
        pl_module.model.save_pretrained(path)
        record = {"step": trainer.global_step, "minutes": round(minutes, 3), "bytes": self.trained_bytes()}
        (path / "snapshot.json").write_text(json.dumps(record) + "\n")
        self._exclude(time.monotonic() - started)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "next_at": self.next_at, "bytes": self.trained_bytes()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.next_at, self.bytes, self._unsynced = state_dict["next_at"], state_dict["bytes"], None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file next to the target, then renamed over it: a run killed
    mid-write leaves the previous checkpoint intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
