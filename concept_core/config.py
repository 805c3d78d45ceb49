"""Build any of the five LCMs from a small YAML/dict config and a concept dimension; print a config's size.

    build_core({"variant": "two_tower", "model_dim": 2048, ...}, concept_dim=1024)  # that variant's config fields

A config file for the command below names the concept space's ``concept_dim`` beside the variant's fields.

    python -m concept_core.config configs/core/two-tower-1.6b.yaml    # builds on the meta device, prints the size
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import torch

from concept_core.base import BaseLCM, BaseLCMConfig
from concept_core.energy import EnergyLCM, EnergyLCMConfig
from concept_core.interface import ConceptModel
from concept_core.one_tower import OneTowerLCM, OneTowerLCMConfig
from concept_core.quant import QuantizedLCM, QuantizedLCMConfig
from concept_core.two_tower import TwoTowerLCM, TwoTowerLCMConfig

CoreConfig = TwoTowerLCMConfig | OneTowerLCMConfig | BaseLCMConfig | QuantizedLCMConfig | EnergyLCMConfig
MODELS = {TwoTowerLCMConfig: TwoTowerLCM, OneTowerLCMConfig: OneTowerLCM, BaseLCMConfig: BaseLCM,
          QuantizedLCMConfig: QuantizedLCM, EnergyLCMConfig: EnergyLCM}
VARIANTS = {config.variant: config for config in MODELS}  # "two_tower" -> TwoTowerLCMConfig, ...
DEFAULT_VARIANT = "two_tower"


def core_config(fields: dict) -> CoreConfig:
    """``{"variant": ..., **fields}`` (variant default DEFAULT_VARIANT) -> that variant's config; unknown variants or
    fields are clear errors."""
    fields = dict(fields)
    variant = fields.pop("variant", DEFAULT_VARIANT)
    if variant not in VARIANTS:
        raise ValueError(f"unknown LCM variant {variant!r}; choose one of {sorted(VARIANTS)}")
    config_cls = VARIANTS[variant]
    known = {f.name for f in dataclasses.fields(config_cls)} - {"variant"}
    if unknown := sorted(set(fields) - known):
        raise ValueError(f"{config_cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")
    return config_cls(**fields)


def build_core(config: CoreConfig | dict, concept_dim: int, device: str | torch.device | None = None) -> ConceptModel:
    """The LCM of a variant config (or of its dict, see ``core_config``) on concepts of ``concept_dim``."""
    if concept_dim < 1:
        raise ValueError(f"concept_dim must be >= 1, got {concept_dim}")
    if isinstance(config, dict):
        config = core_config(config)
    # No device: the caller's default (so that an enclosing `with torch.device("meta")` still applies).
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return MODELS[type(config)](config, concept_dim)


def load_config(path: str | Path) -> tuple[dict, int]:
    """A core config file -> (the variant's fields, its concept_dim)."""
    import yaml

    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or not isinstance(config.get("concept_dim"), int):
        raise ValueError(f"{path}: expected a mapping of config fields with an integer concept_dim")
    concept_dim = config.pop("concept_dim")
    return config, concept_dim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build an LCM from a config (on the meta device) and print its size.")
    parser.add_argument("config", nargs="+", help="YAML files under configs/core/")
    args = parser.parse_args(argv)
    for path in args.config:
        config, concept_dim = load_config(path)
        model = build_core(config, concept_dim, device="meta")
        params = sum(p.numel() for p in model.parameters())
        print(f"{path}: {config.get('variant', 'two_tower')} LCM, {params:,} parameters ({params / 1e9:.2f}B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
