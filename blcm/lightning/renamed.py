"""Settings from before issue 13's layout: the flat ByteLCMModule / EntropyLMModule keys, now in groups, and the
data modules' class paths, now under blcm/data/, and data.max_unit_bytes, now the model's segmenter's. Each
gets an error that names its new place."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from blcm.errors import ConfigError

# keys of the flat arguments from before the groups -> their place now (both modules' old keys)
RENAMED = {
    **{k: f"model.{k}" for k in ("segmenter", "codec", "encoder", "decoder", "core", "dim", "n_layers", "n_heads",
                                 "context", "window", "backend")},
    **{f"{prefix}{part}.concept_dim": "model.concept_dim" for prefix in ("", "model.")
       for part in ("encoder", "decoder")},
    **{k: f"loss.{k}" for k in ("reconstruction_weight", "core_weight", "entropy_weight", "concept_noise",
                                "concept_dropout", "detach_core_inputs", "detach_core_targets")},
    **{k: f"stages.{k}" for k in ("entropy_steps", "autoencoder_steps")},
    **{k: f"optim.{k}" for k in ("lr", "weight_decay", "warmup_steps", "decay_steps", "min_lr_ratio")},
    "val_core_batches": "validation.core_batches", "val_sampling": "validation.sampling",
    "samples": "validation.samples",
    **{f"align_{k}": f"alignment.{k}" for k in ("pairs", "weight", "batch", "units", "temperature")},
}


MOVED = {"blcm.units.UnitDataModule": "blcm.data.units.UnitDataModule",  # class paths from before blcm/data/
         "blcm.data.ByteStreamDataModule": "blcm.data.streams.ByteStreamDataModule"}


def check_renamed(argv: list[str]) -> None:
    """A clear error for a model key from before the groups, on the command line (``--model.lr``) or in a
    ``--config`` file (``model: init_args: lr:``), for a data module's class path from before blcm/data/, and for
    data.max_unit_bytes, which the model's segmenter replaced."""
    if any(arg.startswith("--data.max_unit_bytes") for arg in argv):
        raise ConfigError("--data.max_unit_bytes is gone: the default corpus is prepared with the model's segmenter "
                          "(model.model.segmenter; --data.segmenter for another)")
    for path in config_files(argv):
        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
            continue
        old = config["data"].get("class_path")
        if old in MOVED:
            raise ConfigError(f"{path}: data class_path {old} is now {MOVED[old]}")
        if "max_unit_bytes" in (config["data"].get("init_args") or {}):
            raise ConfigError(f"{path}: data.max_unit_bytes is gone: the default corpus is prepared with the "
                              "model's segmenter (model.model.segmenter; data.segmenter for another)")
    for key in old_keys(argv):
        if RENAMED[key] == "model.concept_dim":
            raise ConfigError(f"model.{key} is set from model.model.concept_dim, written once for the encoder, "
                              "decoder and core: set that instead")
        raise ConfigError(f"model.{key} is now model.{RENAMED[key]} (the module's settings are grouped: "
                          "model, loss, stages, optim, validation, alignment; see blcm fit --help)")


def config_files(argv: list[str]) -> list[Path]:
    """The files ``--config`` / ``-c`` name (those that exist: LightningCLI reports the others)."""
    named = [arg.split("=", 1)[1] if arg.startswith("--config=") else argv[i + 1] for i, arg in enumerate(argv)
             if arg.startswith("--config=") or (arg in ("--config", "-c") and i + 1 < len(argv))]
    return [Path(name) for name in named if Path(name).is_file()]


def old_keys(argv: list[str]) -> list[str]:
    found = []
    for arg in argv:
        if match := re.fullmatch(r"--model\.([\w.]+?)(=.*)?", arg):
            found += [k for k in (match[1], match[1].removeprefix("init_args.")) if k in RENAMED]
    for path in config_files(argv):
        found += yaml_old_keys(yaml.safe_load(path.read_text()))
    return list(dict.fromkeys(found))


def yaml_old_keys(config) -> list[str]:
    model = config.get("model") if isinstance(config, dict) else None
    args = model.get("init_args", model) if isinstance(model, dict) else None
    if not isinstance(args, dict):
        return []
    nested = [f"{name}.{k}" for name in ("encoder", "decoder") if isinstance(args.get(name), dict) for k in args[name]]
    model = args.get("model")
    if isinstance(model, dict):  # a saved config.yaml repeats the derived value: only a different one is an error
        nested += [f"model.{name}.concept_dim" for name in ("encoder", "decoder") if isinstance(model.get(name), dict)
                   and model[name].get("concept_dim", model.get("concept_dim", 256)) != model.get("concept_dim", 256)]
    return [k for k in [*args, *nested] if k in RENAMED]
