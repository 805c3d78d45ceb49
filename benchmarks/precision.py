"""fp32 vs bf16 autocast for a ByteLCM training step on this machine's CPU (or a GPU).

Same model, same batches, the two precisions interleaved step by step so drift in the machine's
speed hits both alike. Prints a table and writes benchmarks/out/precision.json.

    python benchmarks/precision.py --data runs/prepared/en-128 --config configs/tiny.yaml --steps 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from blcm.batch import UnitBatch
from blcm.data.sampler import BucketBatchSampler
from blcm.data.units import PreparedUnits, collate_units
from blcm.lightning import ByteLCMModule
from blcm.lightning.config import instantiate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared directory (blcm prepare)")
    parser.add_argument("--config", default="configs/tiny.yaml", help="a blcm fit YAML (its model and data sizes)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per precision (after 2 warm-up steps)")
    parser.add_argument("--stage", default="joint", choices=("autoencoder", "joint"),
                        help="the training stage timed (default: joint)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default="benchmarks/out/precision.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    config = yaml.safe_load(Path(args.config).read_text())
    data = config["data"]["init_args"]
    torch.manual_seed(0)
    module = instantiate(ByteLCMModule, config["model"]["init_args"]).to(device)
    if args.stage == "autoencoder" and module.hparams.freeze_codec:
        parser.error(f"{args.config} freezes its codec: the autoencoder stage has no loss to time (use --stage joint)")
    dataset = PreparedUnits(args.data, "train", data.get("max_units", 16))
    batches = iter(BucketBatchSampler(dataset.costs(), data.get("batch_size", 8), seed=0))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step(batch: UnitBatch, dtype: torch.dtype | None) -> float:
        batch = batch.to(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            module.model.prepare(batch, args.stage)
            loss = module.model.losses(batch, args.stage).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    # A codec that needs calibrating (an entropy threshold) is calibrated by losses() on the first warm-up batch.
    times: dict[str, list[float]] = {"fp32": [], "bf16 autocast": []}
    for i in range(args.steps + 2):
        batch = collate_units([dataset[j] for j in next(batches)])
        for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            elapsed = step(batch, dtype)
            if i >= 2:
                times[name].append(elapsed)

    rows = {name: {"min_s": min(t), "median_s": statistics.median(t)} for name, t in times.items()}
    base = rows["fp32"]["median_s"]
    print(f"{args.stage} step, {device}, {torch.get_num_threads()} thread(s), {args.steps} steps each")
    print(f"{'precision':<15} {'min s':>8} {'median s':>9} {'vs fp32':>8}")
    for name, r in rows.items():
        print(f"{name:<15} {r['min_s']:>8.3f} {r['median_s']:>9.3f} {r['median_s'] / base:>7.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "threads": torch.get_num_threads(), "stage": args.stage,
                               "steps": args.steps, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
