"""Cost of a ByteLCM training step against document length: 8, 32, 128, 512 units per document.

One document window of exactly N units per step (real units of the prepared data), joint stage
(encoder + core + decoder, forward + backward + AdamW). Each N runs in a fresh subprocess, so its
peak resident memory (ru_maxrss) is its own; the table reports the peak and its growth over the
process after the model and data are loaded. Seconds per unit should stay flat if the cost is
linear in the number of units (the core's attention over N concepts is the only quadratic term).
Writes benchmarks/out/doc_length.json.

    python benchmarks/doc_length.py --data runs/prepared/en-128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

LENGTHS = (8, 32, 128, 512)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(data: str, config_path: str, units: int, steps: int, threads: int | None) -> dict:
    """One length, in this process: -> step times, bytes, and peak memory."""
    from blcm.data.units import PreparedUnits, collate_units
    from blcm.lightning import ByteLCMModule
    from blcm.lightning.config import instantiate

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = yaml.safe_load(Path(config_path).read_text())["model"]["init_args"]
    module = instantiate(ByteLCMModule, {k: v for k, v in config.items() if k != "export_dir"})
    dataset = PreparedUnits(data, "train", max_units=units)
    counts = dataset.window_units  # the EOD unit included
    full = [i for i in range(len(dataset)) if counts[i] == units]
    if len(full) < steps + 1:
        raise SystemExit(f"{data} has {len(full)} windows of {units} units; {steps + 1} are needed")
    batches = [collate_units([dataset[i]]) for i in full[: steps + 1]]
    # A codec that needs calibrating (an entropy threshold) is calibrated by prepare() on the warm-up batch.
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    loaded = rss_mib()
    times = []
    for batch in batches:  # the first is a warm-up
        start = time.perf_counter()
        module.model.prepare(batch, "joint")
        loss = module.model.losses(batch, "joint").total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    times = times[1:]
    num_bytes = statistics.mean(int(b.unit_lengths.sum()) for b in batches[1:])
    return {"units": units, "bytes": num_bytes, "min_s": min(times), "median_s": statistics.median(times),
            "s_per_unit": statistics.median(times) / units, "peak_rss_mib": rss_mib(),
            "step_rss_growth_mib": rss_mib() - loaded, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/prepared/en-128", help="a prepared directory (blcm prepare)")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per length (after one warm-up)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one length, print JSON
    parser.add_argument("--out", default="benchmarks/out/doc_length.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.data, args.config, args.one, args.steps, args.threads)))
        return
    rows = []
    for n in args.lengths:
        cmd = [sys.executable, __file__, "--data", args.data, "--config", args.config, "--one", str(n),
               "--steps", str(args.steps), *(["--threads", str(args.threads)] if args.threads else [])]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{n} units failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["s_per_unit"]
    print(f"ByteLCM {args.config}, joint step, one document per step, {rows[0]['threads']} thread(s)")
    print(f"{'units':>6} {'bytes':>7} {'min s':>7} {'median s':>8} {'ms/unit':>8} {'vs first':>8} "
          f"{'peak RSS MiB':>12} {'step growth MiB':>15}")
    for r in rows:
        print(f"{r['units']:>6} {r['bytes']:>7.0f} {r['min_s']:>7.3f} {r['median_s']:>8.3f} "
              f"{r['s_per_unit'] * 1e3:>8.2f} {r['s_per_unit'] / base:>7.2f}x {r['peak_rss_mib']:>12.0f} "
              f"{r['step_rss_growth_mib']:>15.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "data": args.data, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
