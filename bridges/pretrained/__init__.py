"""The chunk codec that ships with byte-lcm: concepts that decode, with no training.

``chunk-codec/`` (package data) is an exported ChunkConceptCodec: config.json (its ChunkCodecConfig and
concept_dim) + model.safetensors (the weights in the dtype tools/ship_codec.py chose by measurement). That
tool trains and writes it and pins each file's size and SHA-256 in ``PINNED`` below; loading refuses a
file that does not match, in one line naming it, so a damaged install never encodes with corrupt weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from blt.pretrained import SHIPPED_NAME, PretrainedError, verify
from bridges.chunk_codec import ChunkCodecConfig, ChunkConceptCodec
from primitives.export import load_export, save_export

SHIPPED_CODEC = Path(__file__).resolve().parent / "chunk-codec"
EXPORT_KIND = "ChunkCodec"
# name -> (bytes, SHA-256); written by tools/ship_codec.py package.
PINNED = {
    "config.json": (301, "8258b90cf7ffb39b429ee55271d9f775174e3a3cf33b5986121ba1639f39f1c6"),
    "model.safetensors": (694240, "eb22088da8eeea024d48f6ba846575c9a6d315e0ecfd58b8f65fedc4fdb3f92d"),
}


def save_codec_export(codec: nn.Module, directory: str | os.PathLike, kind: str, dtype: torch.dtype) -> Path:
    """Export a codec alone (config.json: its config and concept_dim; model.safetensors in ``dtype``), atomically."""
    config = {"concept_dim": codec.concept_dim, "codec": asdict(codec.config)}
    return save_export(directory, kind, config, {k: v.to(dtype) for k, v in codec.state_dict().items()})


def read_codec_export(directory: Path, kind: str, build: Callable[[dict, int], nn.Module], map_location: str,
                      shipped: Path, pinned: dict[str, tuple[int, str]], what: str, tool: str) -> nn.Module:
    """A ``save_codec_export`` directory -> the codec ``build(config, concept_dim)`` makes, in float32, eval mode; the
    package's own copy (``shipped``) is verified against ``pinned`` first."""
    if directory == shipped:
        if not pinned:
            raise PretrainedError(f"this byte-lcm has no shipped {what}: train one with {tool}")
        verify(directory, pinned)
    try:
        config, state = load_export(directory, kind, map_location)
        codec = build(config["codec"], int(config["concept_dim"]))
        codec.load_state_dict({k: v.float() for k, v in state.items()})
    except (FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise PretrainedError(f"{directory}: not a {what} export ({e})") from None
    return (codec if str(map_location) == "cpu" else codec.to(map_location)).eval()  # cpu: meta stays meta


def save_codec(codec: ChunkConceptCodec, directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Export a chunk codec alone (config.json + model.safetensors in ``dtype``), atomically."""
    return save_codec_export(codec, directory, EXPORT_KIND, dtype)


def load_codec(source: str | os.PathLike = SHIPPED_NAME, map_location: str = "cpu") -> ChunkConceptCodec:
    """``"shipped"`` (the package's codec, files verified first) or a ``save_codec`` directory -> the codec in
    float32, eval mode."""
    directory = SHIPPED_CODEC if str(source) == SHIPPED_NAME else Path(source)
    return read_codec_export(directory, EXPORT_KIND,
                             lambda config, dim: ChunkConceptCodec(ChunkCodecConfig(**config), dim), map_location,
                             SHIPPED_CODEC, PINNED, "chunk codec", "tools/ship_codec.py")
