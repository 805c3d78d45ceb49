"""A tiny prepared corpus and a tiny ByteLCM configuration shared by the end-to-end tests."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import lightning as L
import torch
import yaml

from blcm.data.prepare import prepare
from blcm.lightning import ByteLCMModule
from blcm.lightning.config import instantiate

SUBJECTS = ["The cat", "A dog", "The old man", "My sister", "The president", "A small bird", "The river"]
VERBS = ["sat on", "looked at", "walked to", "spoke about", "flew over", "ran past", "dreamed of"]
OBJECTS = ["the mat.", "the hill.", "the city.", "a letter.", "the sea!", "the garden?", "the moon."]

TINY_ARGS = {  # ByteLCMModule init_args, as a YAML's
    "model": {
        "concept_dim": 32,
        "segmenter": {"kind": "sentence", "max_bytes": 64},
        "codec": {"kind": "byte"},  # the autoregressive codec, with entropy patching: every stage has work
        "encoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "max_positions": None, "pooler_dim": 32,
                    "pooler_layers": 1, "pool_queries": 1, "segment_bytes": None, "patching": "entropy",
                    "target_patch_size": 3.0, "entropy_dim": 32, "entropy_layers": 1, "entropy_heads": 2,
                    "ngram_sizes": [3, 4, 5, 6, 7, 8], "hash_table_size": 256},
        "decoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "slots": 4, "concept_to_inputs": False,
                    "segment_bytes": None, "max_positions": None},
        "core": {"variant": "two_tower", "model_dim": 32, "context_layers": 1, "denoiser_layers": 1, "n_heads": 2},
    },
    "stages": {"entropy_steps": 3, "autoencoder_steps": 3},
    "optim": {"lr": 3e-3, "warmup_steps": 2},
    "validation": {"core_batches": 1, "sampling": {"steps": 4}, "samples": 2},
    "init_entropy_from": None,  # a tiny entropy model of its own, trained in an entropy stage (not the shipped one)
}


def tiny_args(**overrides) -> dict:
    """TINY_ARGS with each override merged into its group (``stages={"entropy_steps": 0}`` keeps
    autoencoder_steps) or, for a plain argument, replacing it."""
    args = copy.deepcopy(TINY_ARGS)
    for key, value in overrides.items():
        args[key] = {**args[key], **value} if isinstance(value, dict) and isinstance(args.get(key), dict) else value
    return args


def tiny_module(**overrides) -> ByteLCMModule:
    torch.manual_seed(0)
    return instantiate(ByteLCMModule, tiny_args(**overrides))


def loss_terms(model, batch, stage: str) -> dict[str, torch.Tensor]:
    """A ByteLCM's unweighted loss terms of ``stage`` on ``batch``, prepared first, as a training step has them."""
    model.prepare(batch, stage)
    return model.losses(batch, stage).terms


def write_corpus(path: Path, docs: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(docs):
            sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
                         for _ in range(rng.randint(2, 6))]
            f.write(json.dumps({"id": str(i), "source": "toy", "text": " ".join(sentences)}) + "\n")
    return path


def prepared_corpus(directory: Path, max_unit_bytes: int = 64) -> Path:
    corpus = write_corpus(directory / "toy.jsonl")
    prepare([corpus], directory / "prepared", max_unit_bytes=max_unit_bytes, valid_percent=20, shard_docs=16,
            progress=False)
    return directory / "prepared"


def write_fit_config(path: Path, data_dir: Path, model: dict | None = None, **trainer) -> Path:
    """A `blcm fit` YAML for the tiny model on ``data_dir``, logging and checkpointing under path's folder."""
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 10, "val_check_interval": 5,
                    "check_val_every_n_epoch": None, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "use_distributed_sampler": False,
                    "plugins": [{"class_path": "blcm.callbacks.AtomicCheckpointIO"}],
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(path.parent / "runs"), "name": "tiny"}},
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"save_last": True, "every_n_train_steps": 1, "save_top_k": 0}},
                                  {"class_path": "blcm.callbacks.CheckpointOnTrainEnd"},
                                  {"class_path": "blcm.callbacks.MetricsHistory"}],
                    **trainer},
        "model": {"class_path": "blcm.lightning.ByteLCMModule",
                  "init_args": {**tiny_args(**(model or {})), "export_dir": str(path.parent / "export")}},
        "data": {"class_path": "blcm.data.units.UnitDataModule",
                 "init_args": {"data_dir": str(data_dir), "max_units": 6, "batch_size": 4, "val_windows": 8}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class RecordBatches(L.Callback):
    """Appends, for every training batch, the step it trains and a fingerprint of its units to a JSON-lines file
    (for checking that a resumed run sees exactly the batches an uninterrupted one would)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        units = batch.units
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                  "shape": list(units.shape), "sum": int(units.sum()), "weighted": int((units * units.cumsum(1)).sum())}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
