"""How well a codec's concepts carry their units, on a fixed sample of units: the codec learning curve's
measurements (benchmarks/codec_curve.py) in one function.

- exact: greedy decoding (a real decode, KV cache, until EOS) gives the unit back byte for byte, for
  clean concepts and under Gaussian noise σ (concepts are batch-normalised: σ is relative to unit variance);
- teacher-forced byte accuracy: the decoder's argmax right given the true bytes before, over the bytes and the
  closing EOS (the share of bytes greedy decoding gets right is blcm.eval.text.decoded_byte_accuracy);
- bits per byte of the decoder given the clean concept, and of an unconditional byte LM on the same
  units ([BOS] unit [EOS], the same targets): the gap is what the concept tells the decoder;
- dispersion (concept_core.metrics): the mean pairwise cosine between concepts and the mean and smallest
  per-dimension variance;
- training FLOPs per byte: one reconstruction step (encoder with its patching pass, decoder, backward),
  counted by torch's FlopCounterMode (matmuls and attention), over the unit bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from copy import deepcopy

import torch
from torch.utils.flop_counter import FlopCounterMode

from blt.entropy import EntropyModel
from blt.ids import BOS, EOS, PAD, pad_batch
from bridges.modality import modality_index
from concept_core.metrics import dispersion


@torch.no_grad()
def codec_scores(codec, units: Sequence[bytes], sigmas: Sequence[float] = (0.1, 0.2, 0.5),
                 byte_lm: EntropyModel | None = None, batch_size: int = 128, seed: int = 0,
                 modality: str | None = None) -> dict[str, float]:
    """Scores of a codec with a byte decoder (``ByteConceptCodec``, or a frozen codec's) on ``units``, encoded as
    units of a ``modality`` document (None: each unit sniffed on its own).

    Bits per byte count the closing EOS as a byte (nats over the L+1 targets of each unit), for the decoder
    and the byte LM alike; the noise of each σ is drawn once for all units, so no score depends on
    ``batch_size``.
    """
    if not units:
        raise ValueError("codec_scores needs at least one unit")
    if codec.decoder is None:
        raise ValueError("this codec has no byte decoder to score")
    units = list(units)
    chunks = [slice(start, start + batch_size) for start in range(0, len(units), batch_size)]
    concepts = torch.cat([codec.encode(units[chunk], modality) for chunk in chunks])  # (U, d), inference normalisation
    generator = torch.Generator().manual_seed(seed)
    noises = {sigma: sigma * torch.randn(concepts.shape, generator=generator).to(concepts.device) for sigma in sigmas}
    sums = dict.fromkeys(["nats", "lm_nats", "targets", "correct", "exact"], 0.0)
    noisy_exact = dict.fromkeys(sigmas, 0)
    for chunk in chunks:
        ids, lengths = (t.to(codec.device) for t in pad_batch(units[chunk]))
        scores = codec.scores(ids, lengths, concepts[chunk])
        sums["nats"] += float(scores.nats.sum())
        sums["correct"] += float(scores.correct.sum())
        sums["targets"] += float((lengths + 1).sum())
        sums["exact"] += exact_matches(codec, concepts[chunk], units[chunk])
        for sigma, noise in noises.items():
            noisy_exact[sigma] += exact_matches(codec, concepts[chunk] + noise[chunk], units[chunk])
        if byte_lm is not None:
            sums["lm_nats"] += float(byte_lm_nats(byte_lm, ids, lengths))
    n, targets = len(units), sums["targets"]
    result = {"units": n, "exact": sums["exact"] / n, "teacher_forced_byte_accuracy": sums["correct"] / targets,
              "bpb": sums["nats"] / targets / math.log(2)}
    result.update({f"exact_sigma_{s:g}": noisy_exact[s] / n for s in sigmas})
    if byte_lm is not None:
        result["lm_bpb"] = sums["lm_nats"] / targets / math.log(2)
    result.update(dispersion(concepts.cpu()))
    return result


def exact_matches(codec, concepts: torch.Tensor, units: Sequence[bytes]) -> int:
    """How many units greedy decoding (a real decode) gives back byte for byte."""
    return sum(decoded == unit for decoded, unit in zip(codec.decode(concepts), units, strict=True))


def byte_lm_nats(byte_lm: EntropyModel, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Summed next-byte nats of an unconditional byte LM over each unit's bytes and EOS, from BOS."""
    rows = torch.nn.functional.pad(ids, (1, 1), value=PAD)
    rows[:, 0] = BOS
    rows.scatter_(1, (lengths + 1)[:, None], EOS)
    nats, _ = byte_lm.nats_and_bytes(rows)
    return nats


def training_flops_per_byte(codec, units: Sequence[bytes], modality: str | None = None) -> float:
    """FLOPs of one reconstruction training step on ``units`` (forward and backward) per unit byte."""
    ids, lengths = (t.to(codec.device) for t in pad_batch(list(units)))
    modalities = None if modality is None else torch.full_like(lengths, modality_index(modality))
    copy = deepcopy(codec).train()  # a training step updates batch-norm statistics: not the caller's codec's
    with FlopCounterMode(display=False) as counter:
        scores = copy.scores(ids, lengths, copy.concepts(ids, lengths, modalities))
        scores.nats.sum().backward()
    return counter.get_total_flops() / float(lengths.sum())
