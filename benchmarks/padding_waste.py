"""Padding waste of unit batches, with and without length bucketing.

A batch's ``units`` is (U, L), padded to its longest unit; the share of PAD there is what the byte
encoder and decoder pay for nothing. For each prepared directory (``blcm prepare ... --out DIR``) and
window/batch size, this prints that share for random batches, for BucketBatchSampler with each cost
of PreparedUnits.costs, and the floor of any batching of whole windows (each window padded alone),
plus the padding of the windows' unit counts (``doc_mask``, what the concept core pays).

    blcm prepare ../shared/data/en/train.jsonl.gz --valid ../shared/data/en/valid.jsonl.gz --out runs/prepared/en
    .venv/bin/python benchmarks/padding_waste.py runs/prepared/en [--max-units 16] [--batch-size 8 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from blcm.data.sampler import BucketBatchSampler
from blcm.data.units import PreparedUnits, collate_units


def waste(ds: PreparedUnits, batches) -> tuple[float, float]:
    pad = total = doc_pad = doc_total = 0
    for b in batches:
        x = collate_units([ds[int(i)] for i in b])
        total += x.units.numel()
        pad += x.units.numel() - int(x.unit_lengths.sum())
        doc_total += x.doc_mask.numel()
        doc_pad += x.doc_mask.numel() - int(x.doc_mask.sum())
    return 100 * pad / max(total, 1), 100 * doc_pad / max(doc_total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="prepared directories")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-units", type=int, default=16)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--out", type=Path, help="also write the shares as JSON to this file (default: print only)")
    args = parser.parse_args()
    results = []
    for d in args.dirs:
        ds = PreparedUnits(d, args.split, max_units=args.max_units)
        floor = waste(ds, [[i] for i in range(len(ds))])[0]
        for b in args.batch_size:
            perm = np.random.default_rng(0).permutation(len(ds))
            rows = {"random (no bucketing)": [perm[i : i + b] for i in range(0, len(ds), b)]}
            for by in ("max_bytes", "padded_bytes"):
                rows[f"bucketed, costs({by!r})"] = list(BucketBatchSampler(ds.costs(by), b, seed=0))
            print(f"\n{d} ({args.split}): {len(ds)} windows, max_units={args.max_units}, batch_size={b}")
            print("| batches | units PAD | doc_mask padding |\n|---|---|---|")
            for name, batches in rows.items():
                units_pad, doc_pad = waste(ds, batches)
                print(f"| {name} | {units_pad:.1f}% | {doc_pad:.1f}% |")
                results.append({"dir": d, "split": args.split, "windows": len(ds), "max_units": args.max_units,
                                "batch_size": b, "batches": name, "units_pad_percent": units_pad,
                                "doc_mask_pad_percent": doc_pad, "floor_percent": floor})
            print(f"| floor: each window padded alone | {floor:.1f}% | 0.0% |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": {**vars(args), "out": str(args.out)}, "rows": results}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
