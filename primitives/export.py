"""Exported models: a directory with ``config.json`` + ``model.safetensors``, written atomically.

The directory is assembled under a temporary name next to its destination and renamed into place,
so a crash mid-write leaves either the old export or the new one, never a mix. Loading reads
safetensors only: nothing is unpickled.

Every export's config.json, and every training checkpoint's model entry, carries the ``format`` it was
written in; one of another format is refused in one line naming both (``check_format``), never half-read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import torch

from primitives.atomic import atomic_directory

CHECKPOINT_KEY = "export"  # a training checkpoint's {"type": kind, "format": ..., "config": ...}: its model
FORMAT = 1  # the layout of the configs this byte-lcm writes and reads; raise it when a config's fields change


class ExportFormatError(ValueError):
    """An export or checkpoint written in a format this byte-lcm does not read."""


def check_format(found: object, where: str) -> None:
    """Refuse ``where`` (an export directory or a checkpoint) unless it was written in FORMAT."""
    if found != FORMAT:
        written = "no format (written before formats were numbered)" if found is None else f"format {found!r}"
        raise ExportFormatError(f"{where} has {written}; this byte-lcm reads format {FORMAT} only: use the byte-lcm "
                                "version that wrote it, or write it again with this one")


def save_export(directory: str | os.PathLike, kind: str, config: dict, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``{"type": kind, "format": FORMAT, **config}`` and the tensors to ``directory``, replacing what is
    there."""
    from safetensors.torch import save_file

    with atomic_directory(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps({"type": kind, "format": FORMAT, **config}, indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, tmp / "model.safetensors")
    return Path(directory)


def export_type(directory: str | os.PathLike) -> str | None:
    """The ``type`` an export's config.json names, None when there is no readable one."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("type") if isinstance(config, dict) else None


def load_export(directory: str | os.PathLike, kind: str,
                map_location: str = "cpu") -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (config without "type" and "format", state dict); a clear error when ``directory`` is not a ``kind``
    export of this FORMAT."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{directory} is not an exported {kind} (expected config.json and model.safetensors)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.pop("type", None) != kind:
        raise ValueError(f"{config_path} does not describe a {kind}")
    check_format(config.pop("format", None), str(directory))
    return config, load_file(weights_path, device=map_location)


class Exportable:
    """A module with a dataclass ``config`` that exports as ``export_kind``; a subclass says how an export's
    config dict builds an untrained one (``from_config``)."""

    export_kind: ClassVar[str]

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """``config.json`` + ``model.safetensors``, written atomically."""
        return save_export(directory, self.export_kind, asdict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu"):
        config, state = load_export(directory, cls.export_kind, map_location)
        model = cls.from_config(config)
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_config(cls, config: dict):
        raise NotImplementedError(f"{cls.__name__} does not say how a config dict builds it")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read a megabyte at a time (the pins of shipped weights and fetched packages)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
