"""The meaning decoder: BLT's local decoder as a conditional byte LM that writes a unit from a meaning.

    meaning m (U, M) -> ``prefix`` slots (U, k, D) and a vector added to every byte embedding (U, 1, D)
    [slots, c_1 … c_C, BOS, b_0 … b_{L-1}] -> causal byte transformer -> logits at BOS … b_{L-1}: b_0 … b_{L-1}, EOS

c_1 … c_C are the last ``context`` bytes of the text before the unit (left-padded with PAD; none where ``context``
is 0), as BLT's local decoder reads its neighbours: the meaning says what to write, the context how it goes on.

It has the shipped entropy model's shape and starts from its weights (``start_from``): a byte LM that already
writes words, so training only has to teach it to listen to the meaning. It trains on noised meanings (an
imprecise prediction must still give a sentence) and, for a share of units, on none (the zero meaning), so
"what the meaning adds" is measured by the same decoder given zeros. Generation is batched over units and
KV-cached: every unit is written at once, a byte a step, greedy or sampled (temperature, top-k, top-p).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.entropy import EntropyModel
from blt.ids import BOS, EOS, OFFSET, PAD, VOCAB_SIZE, decode, pad_batch
from bridges.byte_decoder import DecoderScores
from bridges.length_chunks import by_length
from bridges.meaning_encoder import CHUNK_TOKENS
from primitives.attention import AttentionMask
from primitives.sampling import sample_next
from primitives.transformer import Block, KVCache, init_weights


@dataclass(frozen=True)
class MeaningDecoderConfig:
    """Args:
        dim, n_layers, n_heads: the byte transformer (the shipped entropy model's shape, so it can start from it).
        prefix: meaning slots read before BOS (0: the meaning is only added to the byte embeddings).
        max_bytes: the longest unit it writes.
        context: bytes of the text before the unit it reads (0: it writes from the meaning alone).
    """

    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    prefix: int = 4
    max_bytes: int = 128
    context: int = 0

    def __post_init__(self):
        if min(self.dim, self.n_layers, self.n_heads, self.max_bytes) < 1 or min(self.prefix, self.context) < 0:
            raise ValueError(f"dim, n_layers, n_heads, max_bytes must be >= 1, prefix and context >= 0: {self}")


class MeaningDecoder(nn.Module):
    def __init__(self, config: MeaningDecoderConfig, meaning_dim: int):
        super().__init__()
        self.config = c = config
        self.meaning_dim = meaning_dim
        # The byte LM's parameters keep EntropyModel's names, so its state_dict loads as it is (start_from).
        self.embed = nn.Embedding(VOCAB_SIZE, c.dim)
        self.blocks = nn.ModuleList(Block(c.dim, c.n_heads) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.dim)
        self.head = nn.Linear(c.dim, VOCAB_SIZE, bias=False)
        self.to_prefix = nn.Linear(meaning_dim, c.prefix * c.dim) if c.prefix else None
        self.to_bias = nn.Linear(meaning_dim, c.dim)
        init_weights(self)
        # The meaning enters at zero (the slots are learned constants at first, the bias nothing): a decoder started
        # from a byte LM writes as that LM did until the meaning earns its way in (ControlNet's zero convolutions).
        for layer in self.conditioning_layers():
            nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.to_bias.bias)

    def conditioning_layers(self) -> list[nn.Linear]:
        """The layers that read the meaning (new, where the rest may come from a byte LM)."""
        return [layer for layer in (self.to_prefix, self.to_bias) if layer is not None]

    def start_from(self, byte_lm: EntropyModel) -> None:
        """Take a trained byte LM's weights (same width, depth and heads); the meaning layers stay as they are."""
        missing, unexpected = self.load_state_dict(byte_lm.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("to_prefix", "to_bias")) for k in missing):
            raise ValueError(f"the byte LM does not match the decoder: missing {missing}, unexpected {unexpected}")

    def conditioning(self, meanings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Meanings (U, M) -> the slots (U, k, D) and the per-byte bias (U, 1, D)."""
        slots = meanings.new_zeros(len(meanings), 0, self.config.dim)
        if self.to_prefix is not None:
            slots = rearrange(self.to_prefix(meanings), "u (k d) -> u k d", k=self.config.prefix)
        return slots, self.to_bias(meanings)[:, None]

    def run(self, x: torch.Tensor, start: int, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Inputs (U, T, D) at positions start … start+T-1 -> logits (U, T, V)."""
        positions = torch.arange(start, start + x.shape[1], device=x.device).expand(len(x), -1)
        mask = AttentionMask(causal=True)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, positions, cache=None if caches is None else caches[i])
        return self.head(self.norm(x))

    def context_ids(self, before: Sequence[bytes] | None, units: int) -> torch.Tensor:
        """The text before each of ``units`` units (None: none) -> (units, context) ids of its last ``context``
        bytes, left-padded with PAD."""
        width = self.config.context
        if before is None:
            before = [b""] * units
        if len(before) != units:
            raise ValueError(f"{len(before)} contexts for {units} units")
        reversed_ids, _ = pad_batch([(b[-width:] if width else b"")[::-1] for b in before], pad_to=width)
        return reversed_ids.flip(1).to(self.embed.weight.device)  # right-padded reversed = left-padded

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, meanings: torch.Tensor,
                context: torch.Tensor | None = None) -> DecoderScores:
        """Scores of each unit given its meaning: ids (U, L) PAD past ``lengths`` (U,), meanings (U, M), the text
        before each unit (U, context) (``context_ids``; None: none)."""
        if context is None:
            context = self.context_ids(None, len(ids))
        return DecoderScores(*by_length(self._score, ids, lengths, CHUNK_TOKENS, meanings, context).unbind(1))

    def _score(self, ids: torch.Tensor, meanings: torch.Tensor, context: torch.Tensor,
               lengths: torch.Tensor) -> torch.Tensor:
        """(U, 3): the columns of DecoderScores of one length chunk, stacked so that by_length can reorder rows."""
        inside = torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]
        targets = F.pad(ids.masked_fill(~inside, PAD), (0, 1), value=PAD)  # (U, L+1)
        targets = targets.scatter(1, lengths[:, None], EOS)  # each unit ends with EOS
        inputs = F.pad(targets[:, :-1], (1, 0), value=BOS).masked_fill(targets == PAD, PAD)  # BOS b_0 … b_{L-1}
        slots, bias = self.conditioning(meanings)
        x = torch.cat([slots, self.embed(context), self.embed(inputs) + bias], dim=1)
        logits = self.run(x, 0)[:, slots.shape[1] + context.shape[1] :]  # (U, L+1, V)
        scored = targets != PAD
        nats = F.cross_entropy(rearrange(logits, "u t v -> u v t").float(), targets, reduction="none") * scored
        with torch.no_grad():
            correct = ((logits.argmax(-1) == targets) & scored).sum(1)
        return torch.stack([nats.sum(1), (correct == scored.sum(1)).float(), correct.float()], dim=1)

    @torch.no_grad()
    def generate(self, meanings: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 max_bytes: int | None = None, before: Sequence[bytes] | None = None) -> list[bytes]:
        """Meanings (U, M) -> U units, all written at once byte by byte on a KV cache until EOS or ``max_bytes``;
        ``before``: the text each unit follows (read where ``context`` > 0)."""
        limit = min(max_bytes or self.config.max_bytes, self.config.max_bytes)
        slots, bias = self.conditioning(meanings)
        caches = [KVCache() for _ in self.blocks]
        bos = torch.full((len(meanings), 1), BOS, dtype=torch.long, device=meanings.device)
        context = self.embed(self.context_ids(before, len(meanings)))
        logits = self.run(torch.cat([slots, context, self.embed(bos) + bias], dim=1), 0, caches)[:, -1]
        out = torch.full((len(meanings), limit), PAD, dtype=torch.long, device=meanings.device)
        open_ = torch.ones(len(meanings), dtype=torch.bool, device=meanings.device)
        for t in range(limit):
            logits[:, :EOS] = float("-inf")  # never PAD or BOS
            logits[:, EOS + 1 : OFFSET] = float("-inf")  # nor EOD: a unit ends with EOS
            nxt = sample_next(logits, temperature, top_k, generator, top_p)  # (U,)
            out[:, t] = nxt.masked_fill(~open_, PAD)
            open_ = open_ & (nxt >= OFFSET)
            if not open_.any() or t + 1 == limit:
                break
            logits = self.run(self.embed(nxt[:, None]) + bias, caches[0].length, caches)[:, -1]
        return [decode(row[: int((row >= OFFSET).long().cumprod(0).sum())]) for row in out]
