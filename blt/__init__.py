"""blt: bytes <-> patches (BLT-style). Knows nothing of concepts."""

from blt.attention import AttentionMask, attend
from blt.decoder import LocalDecoder, LocalDecoderConfig
from blt.encoder import LocalEncoder, LocalEncoderConfig
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.hashing import HashNgramEmbedding, hash_ngrams
from blt.patching import Patcher, Patches

__all__ = [
    "AttentionMask", "attend", "LocalDecoder", "LocalDecoderConfig", "LocalEncoder", "LocalEncoderConfig",
    "EntropyModel", "EntropyModelConfig", "HashNgramEmbedding", "hash_ngrams", "Patcher", "Patches",
]
