"""Training the meaning space: the encoder, the decoder and the next-meaning predictor, and the loss that shapes them.

Three terms, each a yardstick of the issue that asked for the space (README, "The meaning space"):
- translation: InfoNCE between a unit and its translation (in-batch negatives, both directions), so translations
  meet;
- next: contrastive predictive coding, a small causal transformer over a document's meanings predicts the next one,
  scored against every other next meaning of the batch, so the space is predictable (negatives, never an MSE a
  constant would minimise);
- writing: the meaning decoder's cross-entropy (nats per byte) given the noised meaning, so the meaning carries the
  unit's content; its gradient reaches the encoder with the weight ``decoder_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blcm.objective import info_nce
from blt.ids import PAD
from bridges.meaning_decoder import MeaningDecoder
from bridges.meaning_encoder import MeaningEncoder
from primitives.attention import AttentionMask
from primitives.transformer import Block, init_weights


@dataclass(frozen=True)
class MeaningLossConfig:
    """Args:
        translation, paragraph, next, writing: the weights of the terms (paragraph: InfoNCE between a paragraph's
            meaning, the normalised mean of its units', and its translation's; it reads paragraphs whose two sides
            have different numbers of units, and is what the xsim yardstick compares; identity: InfoNCE between a
            window unit and a copy with some words dropped, so that every sentence keeps a meaning of its own
            among the batch's, SimCSE-like).
        temperature: InfoNCE's temperature on cosines (both contrastive terms).
        noise: the decoder reads normalize(m + σ ε / sqrt(M)) with σ ~ U(0, noise) per unit.
        unconditional: the share of units the decoder reads with the zero meaning.
        decoder_grad: the weight of the writing term's gradient into the encoder (0: the encoder ignores it).
        writing_units: the decoder writes a random subset of this many of the batch's units (it costs the most).
        cross_writing: a translation pair's English unit is written from its translation's meaning and the
            translation is not written (SONAR's decoder is trained to translate); False: each unit from its own.
    """

    translation: float = 1.0
    paragraph: float = 0.0
    identity: float = 0.0
    next: float = 1.0
    writing: float = 1.0
    temperature: float = 0.05
    noise: float = 1.0
    unconditional: float = 0.1
    decoder_grad: float = 1.0
    writing_units: int = 96
    cross_writing: bool = False


def noised(meanings: torch.Tensor, sigma_max: float, unconditional: float) -> torch.Tensor:
    """What the decoder reads in training: each meaning (U, M) with Gaussian noise of a random σ <= sigma_max
    relative to a coordinate's RMS, renormalised; a share ``unconditional`` of the rows zeroed."""
    sigma = torch.rand(len(meanings), 1, device=meanings.device) * sigma_max
    out = F.normalize(meanings + sigma * torch.randn_like(meanings) / meanings.shape[-1] ** 0.5, dim=-1)
    return out * (torch.rand(len(meanings), 1, device=meanings.device) >= unconditional)


def scaled_grad(x: torch.Tensor, weight: float) -> torch.Tensor:
    """x in the forward pass; its gradient times ``weight`` in the backward pass."""
    return x if weight == 1.0 else x.detach() + weight * (x - x.detach())


class NextMeaning(nn.Module):
    """A small causal transformer: meanings m_1 … m_t (B, N, M) -> the predicted direction of m_{t+1}."""

    def __init__(self, meaning_dim: int, dim: int = 256, layers: int = 2, heads: int = 4):
        super().__init__()
        self.inp = nn.Linear(meaning_dim, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.out = nn.Linear(dim, meaning_dim)
        init_weights(self)

    def forward(self, meanings: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, N, M), (B, N) valid -> (B, N, M) unit-norm predictions of each next meaning."""
        groups = torch.where(valid, 0, -1)
        mask = AttentionMask(q_groups=groups, kv_groups=groups, causal=True)
        positions = torch.arange(meanings.shape[1], device=meanings.device).expand(len(meanings), -1)
        h = self.inp(meanings)
        for block in self.blocks:
            h = block(h, mask, positions)
        return F.normalize(self.out(self.norm(h)), dim=-1)


def next_meaning_nce(predictor: NextMeaning, meanings: torch.Tensor, valid: torch.Tensor,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC over windows (B, N, M): each prediction against every real next meaning of the batch. Returns the loss
    and the top-1 accuracy (how often the true next meaning is the nearest)."""
    predicted = predictor(meanings[:, :-1], valid[:, :-1])  # (B, N-1, M)
    has_next = valid[:, 1:] & valid[:, :-1]
    queries, targets = predicted[has_next], meanings[:, 1:][has_next]  # (Q, M) each
    logits = queries @ targets.T / temperature
    labels = torch.arange(len(queries), device=queries.device)
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


class MeaningModel(nn.Module):
    """The encoder, the decoder and the predictor trained together; ``losses`` is the whole objective."""

    def __init__(self, encoder: MeaningEncoder, decoder: MeaningDecoder, loss: MeaningLossConfig):
        super().__init__()
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.predictor = NextMeaning(encoder.meaning_dim)

    def losses(self, pairs: tuple[torch.Tensor, ...], windows: tuple[torch.Tensor, ...],
               paragraphs: tuple[torch.Tensor, ...] | None = None,
               views: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``pairs``: (ids_a, lengths_a, ids_b, lengths_b), P units and their translations; ``windows``: (ids,
        lengths, valid, before) of B documents' N consecutive units as rows (B·N, L), (B·N,), (B, N) valid, and
        the text before each row (read by a decoder with context);
        ``paragraphs`` (for the paragraph term): (ids_a, lengths_a, paragraph_a, ids_b, lengths_b, paragraph_b),
        the units of Q paragraph pairs and the index (0 … Q-1) of each unit's paragraph; ``views`` (for the
        identity term): (ids, lengths) of the window rows with words dropped.
        Returns the weighted total and every term's value, detached (plus the next-meaning accuracy)."""
        c = self.loss
        ids_a, len_a, ids_b, len_b = pairs
        w_ids, w_len, valid, before = windows
        m_a, m_b = self.encoder(ids_a, len_a), self.encoder(ids_b, len_b)  # (P, M)
        m_w = self.encoder(w_ids, w_len)  # (B·N, M)
        translation = info_nce(m_a, m_b, c.temperature)
        nxt, accuracy = next_meaning_nce(self.predictor, m_w.view(*valid.shape, -1), valid, c.temperature)
        real = valid.reshape(-1)
        if c.cross_writing:
            written = [(m_b, ids_a, len_a), (m_w[real], w_ids[real], w_len[real])]
        else:
            written = [(m_a, ids_a, len_a), (m_b, ids_b, len_b), (m_w[real], w_ids[real], w_len[real])]
        meanings, ids, lengths = zip(*written, strict=True)
        after = [b for b, r in zip(before, real.tolist(), strict=True) if r]  # a translation pair's units: no text
        after = [b""] * (sum(map(len, ids)) - len(after)) + after
        writing = self.writing(torch.cat(meanings), cat_padded(ids), torch.cat(lengths), after)
        total = c.translation * translation + c.next * nxt + c.writing * writing
        terms = {"translation": translation, "next": nxt, "next_accuracy": accuracy, "writing": writing}
        if c.paragraph:
            if paragraphs is None:
                raise ValueError("the paragraph term is weighted but no paragraph pairs were given")
            terms["paragraph"] = info_nce(self.paragraph_meanings(*paragraphs[:3]),
                                          self.paragraph_meanings(*paragraphs[3:]), c.temperature)
            total = total + c.paragraph * terms["paragraph"]
        if c.identity:
            if views is None:
                raise ValueError("the identity term is weighted but no word-dropped views were given")
            terms["identity"] = info_nce(m_w[real], self.encoder(*views)[real], c.temperature)
            total = total + c.identity * terms["identity"]
        terms["total"] = total
        return total, {name: value.detach() for name, value in terms.items()}  # read when logged, not every step

    def paragraph_meanings(self, ids: torch.Tensor, lengths: torch.Tensor, paragraph: torch.Tensor) -> torch.Tensor:
        """Units (U, L) of Q paragraphs, each unit's paragraph (U,) -> (Q, M): the normalised mean of each
        paragraph's unit meanings (as the xsim yardstick pools them)."""
        meanings = self.encoder(ids, lengths)
        sums = meanings.new_zeros(int(paragraph.max()) + 1, meanings.shape[-1]).index_add_(0, paragraph, meanings)
        return F.normalize(sums, dim=-1)

    def writing(self, meanings: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
                before: list[bytes] | None = None) -> torch.Tensor:
        """The writing term: nats per byte (ends included) of a random subset of ``writing_units`` of the units
        (U, L), each written from its noised meaning (U, M) after the text ``before`` it (None: none)."""
        c = self.loss
        keep = torch.randperm(len(ids), device=ids.device)[: c.writing_units]
        meanings, ids, lengths = meanings[keep], ids[keep], lengths[keep]
        context = self.decoder.context_ids(None if before is None else [before[i] for i in keep.tolist()], len(ids))
        scores = self.decoder(ids, lengths, noised(scaled_grad(meanings, c.decoder_grad), c.noise, c.unconditional),
                              context)
        return scores.nats.sum() / (lengths + 1).sum()

    def writing_only(self, windows: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The decoder's stage on a fixed meaning space: the windows' real units written from meanings of the
        encoder as it is (no gradient reaches it), each after the text before it."""
        ids, lengths, valid, before = windows
        real = valid.reshape(-1)
        with torch.no_grad():
            meanings = self.encoder(ids[real], lengths[real])
        writing = self.writing(meanings, ids[real], lengths[real],
                               [b for b, r in zip(before, real.tolist(), strict=True) if r])
        return writing, {"writing": writing.detach()}


def cat_padded(ids: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Rows of id tensors of different widths, stacked with PAD to the widest."""
    width = max(t.shape[1] for t in ids)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=PAD) for t in ids])
