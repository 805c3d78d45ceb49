"""Settings from before issue 13's layout: the flat ByteLCMModule / EntropyLMModule keys, now in groups, and the
data modules' class paths, now under blcm/data/, and data.max_unit_bytes, now the model's segmenter's. Each
gets an error that names its new place."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from blcm import ConfigError

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
    configs = {path: yaml.safe_load(path.read_text()) for path in config_files(argv)}
    for path, config in configs.items():
        data = config.get("data") if isinstance(config, dict) else None
        if isinstance(data, dict) and data.get("class_path") in MOVED:
            problems.append(f"{path}: data class_path {data['class_path']} is now {MOVED[data['class_path']]}")
        if isinstance(data, dict) and "max_unit_bytes" in (data.get("init_args") or {}):
            problems.append(f"{path}: {gone}")
    if (checkpoint := named_checkpoint(argv)) is not None and checkpoint_is_flat(checkpoint):
        problems.append(f"{checkpoint} was written before the grouped layout and cannot resume with this version "
                        "(its run's export_dir, or a snapshot, holds its model: start from it with --model.init_from)")
    for key in old_keys(argv, list(configs.values())):
        if renamed(key) == "model.concept_dim":
            problems.append(f"model.{key} is set from model.model.concept_dim, written once for the encoder, "
                            "decoder and core: set that instead")
        else:
            problems.append(f"model.{key} is now model.{renamed(key)}")
    return problems


def named_checkpoint(argv: list[str]) -> Path | None:
    named = [arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else argv[i + 1] for i, arg in enumerate(argv)
             if arg.startswith("--ckpt_path=") or (arg == "--ckpt_path" and i + 1 < len(argv))]
    return Path(named[-1]) if named and Path(named[-1]).is_file() else None


def checkpoint_is_flat(path: Path) -> bool:
    """Whether a checkpoint's hyper-parameters are the flat init arguments from before the groups."""
    import torch

    try:
        # memory-mapped: the weights are not read, only the hyper-parameters
        hparams = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters") or {}
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is LightningCLI's to report
        return False
    return any(key in RENAMED for key in hparams)


def config_files(argv: list[str]) -> list[Path]:
    """The files ``--config`` / ``-c`` name (those that exist: LightningCLI reports the others)."""
    named = [arg.split("=", 1)[1] if arg.startswith("--config=") else argv[i + 1] for i, arg in enumerate(argv)
             if arg.startswith("--config=") or (arg in ("--config", "-c") and i + 1 < len(argv))]
    return [Path(name) for name in named if Path(name).is_file()]


def old_keys(argv: list[str], configs: list) -> list[str]:
    """The old model keys among the flags and the parsed ``--config`` files."""
    found = []
    for arg in argv:
        if match := re.fullmatch(r"--model\.(?:init_args\.)?([\w.]+?)(=.*)?", arg):
            found += [match[1]] if renamed(match[1]) else []
    for config in configs:
        found += yaml_old_keys(config)
    return list(dict.fromkeys(found))


def renamed(key: str) -> str | None:
    """An old key's new place, itself or below an old group (``encoder.patching`` -> ``model.encoder.patching``)."""
    if key in RENAMED:
        return RENAMED[key]
    group, _, rest = key.partition(".")
    return f"{RENAMED[group]}.{rest}" if rest and group in RENAMED else None


def yaml_old_keys(config) -> list[str]:
    model = config.get("model") if isinstance(config, dict) else None
    args = model.get("init_args", model) if isinstance(model, dict) else None
    if not isinstance(args, dict):
        return []
    nested = [f"{name}.{k}" for name in ("encoder", "decoder") if isinstance(args.get(name), dict) for k in args[name]]
    model = args.get("model")
    if isinstance(model, dict):
        # A config.yaml LightningCLI saved repeats the field's default (256), not the derived value: an error only
        # where someone set another one.
        wanted = model.get("concept_dim", 256)
        nested += [f"model.{name}.concept_dim" for name in ("encoder", "decoder") if isinstance(model.get(name), dict)
                   and model[name].get("concept_dim", wanted) not in (wanted, 256)]
    return [k for k in [*args, *nested] if k in RENAMED]
