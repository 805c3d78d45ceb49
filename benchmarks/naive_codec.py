"""The ablation ladder's first rungs: a deliberately naive byte autoencoder, independent of blt/, to find
which way the concept bottleneck learns fastest per CPU-minute before the levers go into the real codec.

Encoder: byte embeddings + learned absolute positions -> bidirectional transformer -> K learned queries
cross-attend to the byte states (with --segment S, query k sees only bytes [kS, (k+1)S)) -> concatenated
-> linear -> batch norm -> concept (d). Decoder, --decoder ar: causal byte transformer; the concept reaches
it as K cross-attended slots, added to every input embedding, and (with --segment) slot t // S added to
byte t's input; --decoder parallel: position queries only, no byte inputs (all information must come
through the concept). Every ``--eval-every`` minutes, on a fixed sample of 512 en/valid units: greedy
exact match (teacher-forced argmax, which equals greedy decoding) clean and at σ = 0.2, bits per byte
given the concept, and given another unit's concept (shuffled: what the concept is worth is the gap).

    taskset -c 0 python benchmarks/naive_codec.py --data runs/prepared/en-128 --segment 16 --slots 9 \\
        --out benchmarks/results/naive-seg16.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blcm.data.units import PreparedUnits  # noqa: E402

MAX_BYTES = 128


def as_rows(units: list[bytes]) -> torch.Tensor:
    """Units -> (U, L+1) ids: bytes (+4), then EOS (2), right-padded with PAD (0)."""
    rows = torch.zeros(len(units), max(len(u) for u in units) + 1, dtype=torch.long)
    for i, u in enumerate(units):
        rows[i, : len(u)] = torch.frombuffer(bytearray(u), dtype=torch.uint8).long() + 4
        rows[i, len(u)] = 2
    return rows


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False), \
            nn.Linear(dim, dim, bias=False)

    def forward(self, x, context, mask=None, causal=False):
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, cross: bool = False):
        super().__init__()
        self.norm1, self.attn, self.norm3 = nn.RMSNorm(dim), Attention(dim), nn.RMSNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.cross_norm = nn.RMSNorm(dim) if cross else None
        self.cross_attn = Attention(dim) if cross else None

    def forward(self, x, mask=None, causal=False, slots=None):
        h = self.norm1(x)
        x = x + self.attn(h, h, mask, causal)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), slots)
        return x + self.ffn(self.norm3(x))


class NaiveCodec(nn.Module):
    def __init__(self, args):
        super().__init__()
        d, k = args.dim, args.slots
        self.args = args
        self.embed, self.positions = nn.Embedding(260, d), nn.Parameter(torch.randn(MAX_BYTES + 2, d) * args.pos_std)
        self.encoder = nn.ModuleList(Block(d) for _ in range(args.encoder_layers))
        self.queries, self.pool, self.pool_norm = nn.Parameter(torch.randn(k, d) * 0.02), Attention(d), nn.RMSNorm(d)
        self.to_concept = nn.Linear(k * d, args.concept_dim, bias=False)
        self.concept_norm = nn.BatchNorm1d(args.concept_dim, affine=False)
        self.to_slots, self.slot_norm = nn.Linear(args.concept_dim, k * d, bias=False), nn.RMSNorm(d)
        self.decoder = nn.ModuleList(Block(d, cross=True) for _ in range(args.decoder_layers))
        self.decoder_embed = nn.Embedding(260, d)
        self.decoder_positions = nn.Parameter(torch.randn(MAX_BYTES + 2, d) * args.pos_std)
        self.to_inputs, self.segment_in = nn.Linear(args.concept_dim, d, bias=False), nn.Linear(d, d, bias=False)
        self.head = nn.Sequential(nn.RMSNorm(d), nn.Linear(d, 260))

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """(U, T) -> (U, concept_dim)."""
        u, t = rows.shape
        valid = rows != 0
        x = self.embed(rows) + self.positions[:t]
        for block in self.encoder:
            x = block(x, valid[:, None, None, :])
        mask = valid[:, None, None, :]
        if self.args.segment:
            segment = torch.arange(t) // self.args.segment  # (T,)
            mask = mask & (segment[None, None, None, :] == torch.arange(self.args.slots)[None, None, :, None])
            mask = mask | ~mask.any(-1, keepdim=True)  # an empty segment's query sees the whole unit
        pooled = self.pool(self.queries.expand(u, -1, -1), self.pool_norm(x), mask)  # (U, K, D)
        return self.concept_norm(self.to_concept(pooled.reshape(u, -1)))

    def logits(self, concepts: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(U, d), (U, T) -> next-id logits (U, T, 260), teacher-forced."""
        u, t = rows.shape
        slots = self.slot_norm(self.to_slots(concepts).view(u, self.args.slots, -1))
        if self.args.decoder == "parallel":
            x = self.decoder_positions[:t].expand(u, -1, -1) + self.to_inputs(concepts)[:, None]
            causal = False
        else:
            inputs = F.pad(rows[:, :-1], (1, 0), value=1)  # BOS first
            x = self.decoder_embed(inputs) + self.decoder_positions[:t] + self.to_inputs(concepts)[:, None]
            if self.args.segment:
                x = x + self.segment_in(slots)[:, (torch.arange(t) // self.args.segment).clamp(max=self.args.slots - 1)]
            causal = True
        for block in self.decoder:
            x = block(x, None, causal, slots)
        return self.head(x)

    def forward(self, rows: torch.Tensor, sigma: float = 0.0, shuffle: bool = False):
        """-> per-target nats (U, T) and exact match (U,)."""
        concepts = self.encode(rows)
        concepts = concepts + sigma * torch.randn_like(concepts)
        logits = self.logits(concepts.roll(1, 0) if shuffle else concepts, rows)
        nats = F.cross_entropy(logits.flatten(0, 1), rows.flatten(), ignore_index=0, reduction="none").view(rows.shape)
        return nats, ((logits.argmax(-1) == rows) | (rows == 0)).all(1)


@torch.no_grad()
def evaluate(model: NaiveCodec, rows: torch.Tensor) -> dict:
    model.eval()
    targets = (rows != 0).sum()
    nats, exact = model(rows)
    _, noisy = model(rows, sigma=0.2)
    shuffled, _ = model(rows, shuffle=True)
    model.train()
    return {"exact": exact.float().mean().item(), "exact_sigma_0.2": noisy.float().mean().item(),
            "bpb": (nats.sum() / targets / math.log(2)).item(),
            "bpb_shuffled": (shuffled.sum() / targets / math.log(2)).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a prepared units directory (blcm prepare, units <= 128 bytes)")
    p.add_argument("--decoder", choices=("ar", "parallel"), default="ar", help="autoregressive or parallel decoder")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--encoder-layers", type=int, default=2)
    p.add_argument("--decoder-layers", type=int, default=2)
    p.add_argument("--slots", type=int, default=8, help="K pooling queries = decoder slots")
    p.add_argument("--concept-dim", type=int, default=256)
    p.add_argument("--segment", type=int, default=0, help="segment routing: query/slot k <-> bytes [kS, (k+1)S)")
    p.add_argument("--pos-std", type=float, default=1.0, help="init std of the learned positions (bytes: 1.0)")
    p.add_argument("--init-std", type=float, help="re-initialise every linear, embedding and position table "
                   "N(0, std), as primitives.transformer.init_weights does with 0.02 (default: torch's own init)")
    p.add_argument("--batch", type=int, default=32, help="units per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=12)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="the learning rate: constant, or cosine down to a tenth at --minutes (by training time)")
    p.add_argument("--eval-every", type=float, default=2, help="training minutes between evaluations")
    p.add_argument("--out", required=True, help="the JSON written: settings and the curve")
    args = p.parse_args()
    torch.manual_seed(0)
    train = PreparedUnits(args.data, "train").sample_units(100_000, seed=1)
    valid = as_rows(PreparedUnits(args.data, "valid").sample_units(512, seed=2))
    if max(len(u) for u in train) > MAX_BYTES:
        p.error(f"{args.data} has units over {MAX_BYTES} bytes: prepare it with --max-unit-bytes {MAX_BYTES}")
    model = NaiveCodec(args)
    if args.init_std is not None:
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=args.init_std)
        for table in (model.positions, model.decoder_positions):
            nn.init.normal_(table, std=args.init_std)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    draw = torch.Generator().manual_seed(0)
    curve, step, trained_bytes, started, next_eval = [], 0, 0, time.monotonic(), 0.0
    print(f"{sum(q.numel() for q in model.parameters()):,} parameters", flush=True)
    while True:
        minutes = (time.monotonic() - started) / 60
        if minutes >= next_eval or minutes >= args.minutes:
            curve.append({"minutes": round(minutes, 2), "step": step, "bytes": trained_bytes,
                          **evaluate(model, valid)})
            print(json.dumps(curve[-1]), flush=True)
            # Written at every evaluation, so that a run stopped early keeps its curve.
            out.write_text(json.dumps({"settings": vars(args), "curve": curve}, indent=1))
            next_eval += args.eval_every
            if minutes >= args.minutes:
                break
        if args.schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(minutes / args.minutes, 1.0))))
        rows = as_rows([train[i] for i in torch.randint(len(train), (args.batch,), generator=draw)])
        nats, _ = model(rows)
        loss = nats.sum() / (rows != 0).sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step, trained_bytes = step + 1, trained_bytes + int((rows != 0).sum())


if __name__ == "__main__":
    main()
