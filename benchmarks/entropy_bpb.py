"""Bits per byte of an exported entropy model on a JSONL(.gz) corpus, overall and per ``source``.

Each source's documents become one [BOS doc EOS]... stream, scored in windows of the model's
context exactly as `blcm validate` scores its validation set (the cost of ending each document
included), so the overall figure equals `blcm validate`'s val/bpb on the same file.

    .venv/bin/python benchmarks/entropy_bpb.py --model runs/entropy-tiny-en/export \\
        --data ../shared/data/en/valid.jsonl.gz [--out benchmarks/out/entropy_bpb.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from blcm.data.documents import read_jsonl
from blcm.data.streams import StreamWindows, stream_from_documents
from blt.entropy import EntropyModel

REPO = Path(__file__).resolve().parents[1]


def documents_by_source(path: Path) -> dict[str, list[bytes]]:
    groups: dict[str, list[bytes]] = defaultdict(list)
    for _, record in read_jsonl(path):
        groups[record.get("source", "all")].append(record["text"].encode("utf-8"))
    return groups


@torch.inference_mode()
def score(model: EntropyModel, docs: list[bytes], batch_size: int) -> tuple[float, int]:
    windows = StreamWindows(stream_from_documents(docs), model.config.context)
    nats, num_bytes = 0.0, 0
    for batch in DataLoader(windows, batch_size=batch_size):
        n, b = model.nats_and_bytes(batch)
        nats, num_bytes = nats + float(n), num_bytes + int(b)
    return nats, num_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported entropy model directory")
    p.add_argument("--data", type=Path, required=True, help="JSONL(.gz) with `text` (and `source`) fields")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "entropy_bpb.json")
    args = p.parse_args(argv)

    model = EntropyModel.from_pretrained(args.model)
    rows, totals = [], [0.0, 0]
    for source, docs in documents_by_source(args.data).items():
        nats, num_bytes = score(model, docs, args.batch_size)
        totals = [totals[0] + nats, totals[1] + num_bytes]
        rows.append({"source": source, "docs": len(docs), "bytes": num_bytes,
                     "bpb": nats / num_bytes / math.log(2)})
    rows.append({"source": "all", "docs": sum(r["docs"] for r in rows), "bytes": totals[1],
                 "bpb": totals[0] / totals[1] / math.log(2)})

    print(f"{args.model} on {args.data} ({model.num_params():,} parameters, windows of {model.config.context})")
    print("| source | docs | bytes | bits per byte |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['source']} | {r['docs']:,} | {r['bytes']:,} | {r['bpb']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(), "model": str(args.model),
                                    "data": str(args.data), "machine": platform.uname()._asdict(), "rows": rows},
                                   indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
