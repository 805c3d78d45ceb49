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
    """One error naming every setting from before this layout, on the command line (``--model.lr``) or in a
    ``--config`` file (``model: init_args: lr:``): a model key from before the groups, a data module's class path
    from before blcm/data/, and data.max_unit_bytes, which the model's segmenter replaced."""
    if problems := old_settings(argv):
        raise ConfigError("settings from before the grouped layout (see blcm fit --help):\n  " + "\n  ".join(problems))


def old_settings(argv: list[str]) -> list[str]:
    gone = ("data.max_unit_bytes is gone: the default corpus is prepared with the model's segmenter "
            "(model.model.segmenter; data.segmenter for another)")
    problems = [gone] if any(arg.startswith("--data.max_unit_bytes") for arg in argv) else []
    for path in config_files(argv):
        config = yaml.safe_load(path.read_text())
        data = config.get("data") if isinstance(config, dict) else None
        if isinstance(data, dict) and data.get("class_path") in MOVED:
            problems.append(f"{path}: data class_path {data['class_path']} is now {MOVED[data['class_path']]}")
        if isinstance(data, dict) and "max_unit_bytes" in (data.get("init_args") or {}):
            problems.append(f"{path}: {gone}")
    for key in old_keys(argv):
        if RENAMED[key] == "model.concept_dim":
            problems.append(f"model.{key} is set from model.model.concept_dim, written once for the encoder, "
                            "decoder and core: set that instead")
        else:
            problems.append(f"model.{key} is now model.{RENAMED[key]}")
    return problems


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
