"""The entropy model that ships with byte-lcm, and per-modality patching thresholds for any entropy model.

``entropy-bytes/`` (package data) is an exported EntropyModel (config.json + model.safetensors) plus
``thresholds.json``: for each modality name (``bridges.modality``: text, wav, png, ...) the target mean
patch size and the entropy threshold that gives it. tools/ship_entropy_model.py trains and writes it and
pins each file's size and SHA-256 in ``PINNED`` below; ``load_shipped_entropy_model`` refuses a file
that does not match, so a damaged install fails with one line naming the file instead of patching with
corrupt weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from blt.entropy import EntropyModel
from primitives.atomic import atomic_write

SHIPPED = Path(__file__).resolve().parent / "entropy-bytes"
SHIPPED_NAME = "shipped"  # what configs and `--model` flags write for it
THRESHOLDS_FILE = "thresholds.json"
# name -> (bytes, SHA-256); written by tools/ship_entropy_model.py package.
PINNED = {
    "config.json": (147, "f22a78dd76766a8572f89fadff4182cd25e4a5c8d8984b6a41f6f68259e8305e"),
    "model.safetensors": (1743888, "0716ebf03fe38f14e798968fd07d5db310742d42e77563ac55ae42c6d6cc8bd3"),
    "thresholds.json": (426, "31408586352ac0aafc3ecddd93a684187e90fea65e37c906bfe8b3bf84b08af3"),
}


class PretrainedError(Exception):
    """A shipped or exported model file that is missing, truncated or not the pinned one."""


@dataclass(frozen=True)
class ModalityThresholds:
    """Per modality name: a target mean patch size and the ``entropy`` mode thresholds (nats) calibrated to it.

    A byte's entropy depends on how much context it has, so there are two sets: ``file`` for whole files
    scored in the model's sliding context (`blcm patch`, segmenters) and ``unit`` for units of at most
    ``unit_bytes`` bytes, each scored from its own first byte (the ByteLCM encoder). A modality without
    values of its own (a JPEG, a PDF) gets the ``fallback``'s.
    """

    target_patch_sizes: dict[str, float]
    file: dict[str, float]
    unit: dict[str, float]
    unit_bytes: int
    fallback: str = "binary"

    def __post_init__(self):
        for name in ("target_patch_sizes", "file", "unit"):
            if self.fallback not in getattr(self, name):
                raise ValueError(f"{name} has no value for the fallback modality {self.fallback!r}")

    def pick(self, table: str, modality: str) -> float:
        """``table`` ("target_patch_sizes", "file" or "unit")'s value for ``modality``, else the fallback's."""
        values = getattr(self, table)
        return values.get(modality, values[self.fallback])

    def save(self, directory: str | os.PathLike) -> Path:
        return atomic_write(Path(directory) / THRESHOLDS_FILE, json.dumps(asdict(self), indent=2) + "\n")


def load_thresholds(directory: str | os.PathLike) -> ModalityThresholds | None:
    """An export's thresholds.json, None when it has none."""
    path = Path(directory) / THRESHOLDS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:  # not UTF-8, not JSON
        raise PretrainedError(f"{path} is not a thresholds file ({e})") from None
    try:
        return ModalityThresholds(**{k: {m: float(v) for m, v in raw[k].items()}
                                     for k in ("target_patch_sizes", "file", "unit")},
                                  unit_bytes=int(raw["unit_bytes"]), fallback=str(raw["fallback"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PretrainedError(f"{path} is not a thresholds file ({e})") from None


def verify(directory: Path, pinned: dict[str, tuple[int, str]]) -> None:
    """Refuse the first file of ``pinned`` that is missing or whose size or SHA-256 differs."""
    for name, (size, sha256) in pinned.items():
        path = directory / name
        if not path.is_file():
            raise PretrainedError(f"{path} is missing: reinstall byte-lcm")
        actual = path.stat().st_size
        if actual != size:
            raise PretrainedError(f"{path} is {actual} bytes, not the {size} it ships with (truncated or replaced): "
                                  f"reinstall byte-lcm")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise PretrainedError(f"{path} has SHA-256 {digest[:16]}..., not the pinned {sha256[:16]}... "
                                  f"(the file was changed): reinstall byte-lcm")


def pin_files(directory: Path, names: list[str]) -> dict[str, tuple[int, str]]:
    """name -> (bytes, SHA-256) of files in ``directory``: what ``verify`` checks them against."""
    return {n: ((directory / n).stat().st_size, hashlib.sha256((directory / n).read_bytes()).hexdigest())
            for n in names}


def write_pins(module: Path, pins: dict[str, tuple[int, str]]) -> None:
    """Rewrite the ``PINNED = {...}`` literal of a Python module (the tools that ship weights call this)."""
    body = "".join(f'    "{n}": ({size}, "{sha}"),\n' for n, (size, sha) in pins.items())
    text, count = re.subn(r"PINNED = \{\s*(\n.*?)?\}\n", lambda _: "PINNED = {\n" + body + "}\n", module.read_text(),
                          count=1, flags=re.S)
    if count != 1:
        raise ValueError(f"{module} has no PINNED = {{...}} literal to rewrite")
    atomic_write(module, text)


def load_shipped_entropy_model(map_location: str = "cpu") -> tuple[EntropyModel, ModalityThresholds]:
    """The shipped entropy model (float32 parameters loaded from the fp16 file, eval mode) and its per-modality
    thresholds, files verified first."""
    verify(SHIPPED, PINNED)
    model = EntropyModel.from_pretrained(SHIPPED, map_location)
    return model, load_thresholds(SHIPPED)


def load_entropy_model(source: str | os.PathLike = SHIPPED_NAME,
                       map_location: str = "cpu") -> tuple[EntropyModel, ModalityThresholds | None]:
    """``"shipped"`` (the package's model) or an export directory -> (the model, its thresholds if it has any)."""
    if str(source) == SHIPPED_NAME:
        return load_shipped_entropy_model(map_location)
    try:
        model = EntropyModel.from_pretrained(source, map_location)
    except (FileNotFoundError, ValueError) as e:
        raise PretrainedError(str(e)) from None
    return model, load_thresholds(source)
