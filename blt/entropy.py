"""EntropyModel: a causal byte LM. Small, its next-byte entropy decides where patches start;
at ByteLCM's size (configs/bytegpt-tiny.yaml) it is the next-byte baseline the LCM argues against.

``entropies`` scores any number of byte strings of any length. Each string is a row of its
own, so no string ever attends to another (BLT's reference flattens the batch into one long
sequence and lets neighbours leak into each other's context). Strings longer than the model's
context are scored in overlapping windows: every byte keeps at least ``context // 2`` bytes of
left context, except near the start. ``log_probs`` scores the same way; ``generate`` continues a
prompt with a KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blt.ids import BOS, EOS, OFFSET, PAD, VOCAB_SIZE
from primitives.attention import AttentionMask
from primitives.export import Exportable
from primitives.sampling import sample_next
from primitives.transformer import Block, KVCache, init_weights

MAX_ENTROPY = math.log(VOCAB_SIZE)  # nats, a uniform distribution over the 260 ids


EXPORT_KIND = "EntropyModel"


@dataclass
class EntropyModelConfig:
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    context: int = 256  # bytes of context the model is trained on and scores with (as every shipped config)
    window: int | None = None  # sliding attention window (None: full causal)
    backend: str = "auto"


class EntropyModel(Exportable, nn.Module):
    export_kind = EXPORT_KIND

    def __init__(self, config: EntropyModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(VOCAB_SIZE, config.dim)
        self.blocks = nn.ModuleList(Block(config.dim, config.n_heads, config.backend)
                                    for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.dim)
        self.head = nn.Linear(config.dim, VOCAB_SIZE, bias=False)
        init_weights(self)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """ids (B, L) -> next-id logits (B, L, 260), causal (right padding never leaks back). With
        ``caches`` (one per block), ids continue the sequence the caches hold."""
        mask = AttentionMask(causal=True, window=self.config.window)
        start = 0 if caches is None else caches[0].length
        positions = torch.arange(start, start + ids.shape[1], device=ids.device).expand_as(ids)
        x = self.embed(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, positions, cache=None if caches is None else caches[i])
        return self.head(self.norm(x))

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean next-id cross-entropy in nats over ids (B, L); PAD targets are ignored."""
        logits = self(ids[:, :-1])
        return F.cross_entropy(rearrange(logits, "b l v -> (b l) v"), ids[:, 1:].reshape(-1), ignore_index=PAD)

    def nats_and_bytes(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores windows ids (B, L+1) of a [BOS doc EOS]... stream: the summed next-id cross-entropy
        (nats) over byte and EOS targets, and the number of byte targets. nats / bytes / ln 2 is bits
        per byte, the cost of ending each document included."""
        logits = self(ids[:, :-1])
        targets = ids[:, 1:]
        nats = F.cross_entropy(rearrange(logits, "b l v -> (b l) v").float(), targets.reshape(-1), reduction="none")
        scored = (targets != PAD) & (targets != BOS)
        return nats[scored.reshape(-1)].sum(), (targets >= OFFSET).sum()

    @torch.no_grad()
    def entropies(
        self,
        ids: torch.Tensor,  # (B, L) byte ids, right-padded
        lengths: torch.Tensor,  # (B,)
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Entropy in nats of the model's prediction for each byte given the bytes before it.

        Returns (B, L) float32, zero at padding. Byte 0 is predicted from BOS alone.
        """
        def entropy(logits, targets):
            logp = torch.log_softmax(logits.float(), dim=-1)
            return -(logp.exp() * logp).sum(-1)

        return self._windowed(entropy, ids, lengths, batch_size, progress)

    @torch.no_grad()
    def log_probs(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64,
                  progress: bool = False) -> torch.Tensor:
        """log p(ids[t] | BOS, ids[<t]) in nats, (B, L) float32, zero at padding (windowed as ``entropies``)."""
        def log_prob(logits, targets):
            return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]

        return self._windowed(log_prob, ids, lengths, batch_size, progress)

    def _windowed(self, score, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int,
                  progress: bool) -> torch.Tensor:
        """``score(logits (b, w, V), targets (b, w)) -> (b, w)`` at every byte of ids (B, L), each byte
        predicted from at most ``context`` ids before it."""
        batch, length = ids.shape
        x = torch.cat([torch.full_like(ids[:, :1], BOS), ids[:, :-1]], dim=1)  # x[t] predicts ids[t]
        # The first window scores bytes [0, width); each later one scores `stride` new bytes after
        # `left` bytes of context. The layout depends only on positions, never on the batch.
        width = self.config.context
        left = width // 2
        stride = width - left
        jobs = [(x[:, :width], ids[:, :width], width)]
        if length > width:
            n = math.ceil((length - width) / stride)
            pad = left + n * stride - (length - width + left)
            windows = [rearrange(F.pad(t[:, width - left :], (0, pad), value=PAD).unfold(1, width, stride),
                                 "b n w -> (b n) w") for t in (x, ids)]
            jobs.append((*windows, stride))
        parts = []
        for inputs, targets, keep in jobs:
            starts = range(0, inputs.shape[0], batch_size)
            if progress:
                from tqdm import tqdm

                starts = tqdm(starts, desc="byte LM", unit="batch", leave=False)
            h = torch.cat([score(self(inputs[s : s + batch_size]), targets[s : s + batch_size])[:, -keep:]
                           for s in starts])
            parts.append(rearrange(h, "(b n) w -> b (n w)", b=batch))
        h = torch.cat(parts, dim=1)[:, :length]
        inside = torch.arange(length, device=ids.device) < lengths[:, None]
        return h.masked_fill(~inside, 0.0)

    @torch.no_grad()
    def generate(self, prompt: bytes, max_new_bytes: int = 256, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_at_end: bool = True) -> bytes:
        """Continue ``prompt`` byte by byte with a KV cache, until ``max_new_bytes`` or (``stop_at_end``)
        the end of the document. The prompt is cut to its last ``context - max_new_bytes`` bytes, so the
        whole sequence stays within the context the model was trained on (a cut prompt still starts with
        BOS: the model reads it as a document start)."""
        if max_new_bytes < 1 or max_new_bytes >= self.config.context:
            raise ValueError(f"max_new_bytes must be between 1 and {self.config.context - 1} (the context), "
                             f"got {max_new_bytes}")
        keep = self.config.context - max_new_bytes  # BOS + kept + all but the last new byte fill the context
        device = self.head.weight.device
        kept = prompt[max(len(prompt) - keep, 0) :]
        ids = torch.tensor([[BOS, *(b + OFFSET for b in kept)]], dtype=torch.long, device=device)  # (1, P)
        caches = [KVCache() for _ in self.blocks]
        logits = self(ids, caches)[:, -1]
        out = bytearray()
        for _ in range(max_new_bytes):
            logits[:, : OFFSET if not stop_at_end else EOS] = float("-inf")  # never PAD or BOS
            nxt = sample_next(logits, temperature, top_k, generator)  # (1,)
            token = int(nxt)
            if token < OFFSET:  # EOS (or EOD): the document ends
                break
            out.append(token - OFFSET)
            logits = self(nxt[:, None], caches)[:, -1]
        return bytes(out)

    @classmethod
    def from_config(cls, config: dict) -> EntropyModel:
        """An untrained model of an export's (or a checkpoint's ``export``) config."""
        return cls(EntropyModelConfig(**config))
