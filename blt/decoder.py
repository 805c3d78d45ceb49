"""LocalDecoder: next-byte logits from byte history and cross-attention to latent slots.

Each layer: causal self-attention over bytes (optionally within a sliding window) -> cross-attention
to slots -> SwiGLU. An optional per-row vector (``input_bias``, e.g. a projected concept) is added to
every byte embedding, and optional learned absolute positions. With ``segment_bytes`` = S, the byte at
position t also gets slot t // S (the last slot past the end) added to its embedding: slot k is read
where the bytes it encodes are, as a BLT local decoder reads its patch's latent.
``generate`` decodes with a KV cache for self-attention and computes the slot keys and values
once; its output equals re-running the full forward pass at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import repeat
from torch import nn

from blt.ids import BOS, EOS, PAD, VOCAB_SIZE
from blt.local_stack import LearnedPositions, LocalStackConfig
from primitives.attention import AttentionMask
from primitives.sampling import sample_next
from primitives.transformer import Block, KVCache, init_weights


@dataclass
class LocalDecoderConfig(LocalStackConfig):
    slot_dim: int = 256
    segment_bytes: int | None = None  # byte t also reads slot t // segment_bytes through its input (None: off)


class LocalDecoder(nn.Module):
    def __init__(self, config: LocalDecoderConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(VOCAB_SIZE, c.dim)
        self.positions = LearnedPositions(c.max_positions, c.dim) if c.max_positions else None
        self.segment_in = nn.Linear(c.slot_dim, c.dim, bias=False) if c.segment_bytes else None
        self.blocks = nn.ModuleList(Block(c.dim, c.n_heads, c.backend, context_dim=c.slot_dim)
                                    for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.dim)
        self.head = nn.Linear(c.dim, VOCAB_SIZE, bias=False)
        init_weights(self, c.init_std)

    @staticmethod
    def slot_attention_mask(num_bytes: int, slot_mask: torch.Tensor | None) -> AttentionMask | None:
        if slot_mask is None:
            return None
        kv_groups = torch.where(slot_mask, 0, -1)  # (B, S)
        return AttentionMask(torch.zeros_like(kv_groups[:, :1]).expand(-1, num_bytes), kv_groups)

    def forward(
        self,
        ids: torch.Tensor,  # (B, L) input bytes, usually [BOS, b_0, ..., b_{L-2}]
        slots: torch.Tensor,  # (B, S, slot_dim)
        slot_mask: torch.Tensor | None = None,  # (B, S) bool, True = a real slot
        caches: list[KVCache] | None = None,
        start: int = 0,  # position of ids[:, 0] (non-zero with a cache)
        input_bias: torch.Tensor | None = None,  # (B, dim) added to every byte embedding
    ) -> torch.Tensor:
        """-> logits (B, L, 260)."""
        batch, length = ids.shape
        positions = torch.arange(start, start + length, device=ids.device).expand(batch, -1)
        self_mask = AttentionMask(causal=True, window=self.config.window)
        cross_mask = self.slot_attention_mask(length, slot_mask)
        x = self.embed(ids)
        if self.positions is not None:
            x = x + self.positions(positions)
        if input_bias is not None:
            x = x + input_bias[:, None]
        if self.segment_in is not None:
            segment = (positions // self.config.segment_bytes).clamp(max=slots.shape[1] - 1)  # (B, L)
            x = x + self.segment_in(slots).gather(1, repeat(segment, "b l -> b l d", d=x.shape[-1]))
        for i, block in enumerate(self.blocks):
            x = block(x, self_mask, positions, context=slots, context_mask=cross_mask,
                      cache=None if caches is None else caches[i])
        return self.head(self.norm(x))

    @torch.no_grad()
    def generate(
        self,
        slots: torch.Tensor,  # (B, S, slot_dim)
        slot_mask: torch.Tensor | None = None,
        max_bytes: int = 256,
        temperature: float = 0.0,  # 0: greedy
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        input_bias: torch.Tensor | None = None,  # (B, dim), as in forward
    ) -> torch.Tensor:
        """Decode from BOS until EOS or ``max_bytes``. -> ids (B, T), PAD after each row's EOS."""
        batch = slots.shape[0]
        ids = torch.full((batch, 1), BOS, dtype=torch.long, device=slots.device)
        done = torch.zeros(batch, dtype=torch.bool, device=slots.device)
        caches = [KVCache() for _ in self.blocks] if use_cache else None
        out = []
        for step in range(max_bytes):
            if use_cache:
                logits = self(ids[:, -1:], slots, slot_mask, caches=caches, start=step, input_bias=input_bias)[:, -1]
            else:
                logits = self(ids, slots, slot_mask, input_bias=input_bias)[:, -1]
            logits[:, :EOS] = float("-inf")  # never PAD or BOS
            logits[:, EOS + 1 : 4] = float("-inf")  # EOD ends documents, not units
            nxt = sample_next(logits, temperature, top_k, generator)
            nxt = nxt.masked_fill(done, PAD)
            out.append(nxt)
            done |= nxt == EOS
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if bool(done.all()):
                break
        return torch.stack(out, dim=1) if out else ids[:, :0]

