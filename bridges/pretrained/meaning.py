"""The meaning codec that ships with byte-lcm: meanings from bytes, and a decoder that writes from them.

``meaning-codec/`` (package data) is an exported MeaningCodec: config.json (its MeaningCodecConfig and
concept_dim, the meaning's size) + model.safetensors (the encoder's and decoder's weights; the patcher is the
shipped entropy model, pinned on its own). tools/ship_meaning.py trains and writes it and pins each file's size
and SHA-256 in ``PINNED`` below; loading refuses a file that does not match, in one line naming it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from blt.pretrained import SHIPPED_NAME, PretrainedError, verify
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig
from primitives.export import load_export, save_export

SHIPPED_MEANING = Path(__file__).resolve().parent / "meaning-codec"
EXPORT_KIND = "MeaningCodec"
# name -> (bytes, SHA-256); written by tools/ship_meaning.py package.
PINNED = {
    "config.json": (597, "e454f4ec88b947a3e9e4a37066e0e1165f7024b624f317438d9e3adc6f6e20b5"),
    "model.safetensors": (18500018, "e6808debd71bc4dd0c81250b8a334edb11cf78a4814296d4db567b22dbf9911c"),
}


def save_meaning_codec(codec: MeaningCodec, directory: str | os.PathLike,
                       dtype: torch.dtype = torch.float32) -> Path:
    """Export a meaning codec alone (config.json + model.safetensors in ``dtype``), atomically."""
    config = {"concept_dim": codec.concept_dim, "codec": asdict(codec.config)}
    return save_export(directory, EXPORT_KIND, config, {k: v.to(dtype) for k, v in codec.state_dict().items()})


def load_meaning_codec(source: str | os.PathLike = SHIPPED_NAME, map_location: str = "cpu") -> MeaningCodec:
    """``"shipped"`` (the package's meaning codec, files verified first) or a ``save_meaning_codec`` directory ->
    the codec in float32, eval mode."""
    directory = SHIPPED_MEANING if str(source) == SHIPPED_NAME else Path(source)
    if directory == SHIPPED_MEANING:
        if not PINNED:
            raise PretrainedError("this byte-lcm has no shipped meaning codec: train one with tools/ship_meaning.py")
        verify(directory, PINNED)
    try:
        config, state = load_export(directory, EXPORT_KIND, map_location)
        codec = MeaningCodec(MeaningCodecConfig(**config["codec"]), int(config["concept_dim"]))
        codec.load_state_dict({k: v.float() for k, v in state.items()})
    except (FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise PretrainedError(f"{directory}: not a meaning codec export ({e})") from None
    return (codec if str(map_location) == "cpu" else codec.to(map_location)).eval()  # cpu: meta stays meta
