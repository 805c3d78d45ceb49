"""The meaning codec that ships with byte-lcm: meanings from bytes, and a decoder that writes from them.

``meaning-codec/`` (package data) is an exported MeaningCodec: config.json (its MeaningCodecConfig and
concept_dim, the meaning's size) + model.safetensors (the encoder's and decoder's weights; the patcher is the
shipped entropy model, pinned on its own). tools/ship_meaning.py trains and writes it and pins each file's size
and SHA-256 in ``PINNED`` below; loading refuses a file that does not match, in one line naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from blt.pretrained import SHIPPED_NAME
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig
from bridges.pretrained import read_codec_export, save_codec_export

SHIPPED_MEANING = Path(__file__).resolve().parent / "meaning-codec"
EXPORT_KIND = "MeaningCodec"
# name -> (bytes, SHA-256); written by tools/ship_meaning.py package.
PINNED = {
    "config.json": (597, "e454f4ec88b947a3e9e4a37066e0e1165f7024b624f317438d9e3adc6f6e20b5"),
    "model.safetensors": (18500018, "c2e5390261df6458c10643aad9763625cb31cef90d59f8ca8906caae34a0bd20"),
}


def save_meaning_codec(codec: MeaningCodec, directory: str | os.PathLike,
                       dtype: torch.dtype = torch.float32) -> Path:
    """Export a meaning codec alone (config.json + model.safetensors in ``dtype``), atomically."""
    return save_codec_export(codec, directory, EXPORT_KIND, dtype)


def load_meaning_codec(source: str | os.PathLike = SHIPPED_NAME, map_location: str = "cpu") -> MeaningCodec:
    """``"shipped"`` (the package's meaning codec, files verified first) or a ``save_meaning_codec`` directory ->
    the codec in float32, eval mode."""
    directory = SHIPPED_MEANING if str(source) == SHIPPED_NAME else Path(source)
    return read_codec_export(directory, EXPORT_KIND,
                             lambda config, dim: MeaningCodec(MeaningCodecConfig(**config), dim), map_location,
                             SHIPPED_MEANING, PINNED, "meaning codec", "tools/ship_meaning.py")
