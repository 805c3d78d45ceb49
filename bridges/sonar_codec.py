"""SONAR concepts: Meta's frozen text encoder and decoder (``sonar-space``), the LCM's own concept space.

SONAR pins fairseq2, which pins its own torch build, and downloads its weights at run time (to
``$TORCH_HOME/hub`` or ``$XDG_CACHE_HOME/fairseq2``), so it lives in a separate environment; see
the README ("SONAR-based LCM"). ``encoder``, ``decoder`` and ``tokenizer`` are fairseq2 asset
names (``text_sonar_basic_encoder`` ...) or the names of asset cards you wrote for local
checkpoints (a YAML card in ``$FAIRSEQ2_USER_ASSET_DIR`` whose ``checkpoint`` is a local path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from bridges.frozen_codec import EOD_TEXT, CodecUnavailable, FrozenConceptCodec, as_text

SONAR_DIM = 1024
INSTALL = ("SONAR needs its own environment (sonar-space pins fairseq2 and a torch build): "
           "python -m venv .venv-sonar && .venv-sonar/bin/pip install sonar-space && "
           ".venv-sonar/bin/pip install --no-deps -e . && .venv-sonar/bin/pip install einops lightning tensorboard "
           "jsonargparse[signatures] safetensors matplotlib tqdm sacrebleu rouge-score")


@dataclass(frozen=True)
class SonarCodecConfig:
    """SONAR's frozen text encoder and decoder.

    Args:
        kind: names this codec in a config.
        encoder: the encoder's fairseq2 asset name (or a local asset card).
        decoder: the decoder's.
        tokenizer: the tokenizer's.
        lang: the FLORES-200 code of the text (eng_Latn, fra_Latn, ...), for both directions.
        normalizer: the concept normaliser (see FrozenConceptCodec).
        eod_text: the sentence whose concept ends a document.
        batch_size: sentences per SONAR call.
    """

    kind: Literal["sonar"] = "sonar"
    encoder: str = "text_sonar_basic_encoder"
    decoder: str = "text_sonar_basic_decoder"
    tokenizer: str = "text_sonar_basic_encoder"
    lang: str = "eng_Latn"
    normalizer: str = "robust"
    eod_text: str = EOD_TEXT
    batch_size: int = 32


class SonarCodec(FrozenConceptCodec):
    """The ConceptCodec over SONAR's text encoder and decoder (both frozen; nothing here is trained); decoding
    stops at ``max_unit_bytes`` tokens (SONAR decodes tokens, not bytes)."""

    def __init__(self, config: SonarCodecConfig = SonarCodecConfig(), max_unit_bytes: int = 256):
        encoder, decoder, tokenizer = config.encoder, config.decoder, config.tokenizer
        try:
            from sonar.inference_pipelines.text import EmbeddingToTextModelPipeline, TextToEmbeddingModelPipeline
        except ImportError:
            raise CodecUnavailable(f"the SONAR concept space needs sonar-space. {INSTALL}") from None
        super().__init__(SONAR_DIM, config.normalizer, config.eod_text, max_unit_bytes)
        self.lang, self.batch_size = config.lang, config.batch_size
        try:
            to_vectors = TextToEmbeddingModelPipeline(encoder=encoder, tokenizer=tokenizer)
            to_text = EmbeddingToTextModelPipeline(decoder=decoder, tokenizer=tokenizer)
        except Exception as e:  # noqa: BLE001 - fairseq2 raises its own errors for a missing or unreachable asset
            raise CodecUnavailable(f"cannot load SONAR ({encoder}, {decoder}): {type(e).__name__}: {e}. The weights "
                                   "download on first use (needs network) or come from local asset cards") from None
        object.__setattr__(self, "pipelines", (to_vectors, to_text))  # frozen, not submodules: never saved with us

    @torch.no_grad()
    def embed(self, units: Sequence[bytes]) -> torch.Tensor:
        to_vectors = self.pipelines[0]
        vectors = to_vectors.predict(as_text(units), source_lang=self.lang, batch_size=self.batch_size)
        return vectors.float().to(self.device)  # (n, 1024)

    @torch.no_grad()
    def decode(self, concepts: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Concepts (n, d) -> n units through SONAR's decoder (beam search; the sampling knobs do not apply)."""
        to_text = self.pipelines[1]
        vectors = self.normalizer.denormalize(concepts.to(self.device).float())
        texts = to_text.predict(vectors, target_lang=self.lang, max_seq_len=self.max_unit_bytes,
                                batch_size=self.batch_size)
        return [t.encode() for t in texts]
