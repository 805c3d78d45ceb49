"""Next concept vs next byte at equal parameter count: ByteLCM tiny and ByteGPT tiny side by side.

Three tables, both models measured in the same process with their repeats interleaved, so drift in
the machine's speed hits both alike:

- training: bytes per optimizer step, seconds per step (min / median), bytes/s;
- CPU efficiency: FLOPs per step (torch's FlopCounterMode: matmuls and attention), achieved FLOP/s,
  and that as a share of the fp32 GEMM throughput measured in the same run;
- generation: bytes/s continuing real documents (ByteLCM: concept by concept, Two-Tower sampling with
  20 steps and no guidance as `blcm eval`, each unit decoded greedily with a KV cache; ByteGPT: byte
  by byte with a KV cache, as many bytes as ByteLCM produced, at least 64 and at most its context - 1).

ByteLCM trains on windows of its prepared units (joint stage: encoder + core + decoder); ByteGPT on
the same documents' bytes as rows of its context. Writes benchmarks/out/paradigms.json.

    python benchmarks/paradigms.py --data runs/prepared/en-128 --threads 1 \\
        --lcm-model runs/wallclock/tiny/export --lm-model runs/wallclock/bytegpt-tiny/export
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from blcm.batch import UnitBatch
from blcm.data.sampler import BucketBatchSampler
from blcm.data.units import PreparedUnits, collate_units
from blcm.lightning import ByteLCMModule, EntropyLMModule
from blcm.lightning.config import instantiate
from blcm.model import ByteLCM
from blt.entropy import EntropyModel
from blt.ids import BOS, EOS, OFFSET, decode
from concept_core.interface import Sampling


def model_args(config_path: str) -> tuple[dict, dict]:
    config = yaml.safe_load(Path(config_path).read_text())
    return config["model"]["init_args"], config["data"]["init_args"]


def byte_rows(windows: list[list[np.ndarray]], rows: int, width: int) -> torch.Tensor:
    """The bytes of unit windows, as a [BOS doc EOS]... stream cut into ``rows`` rows of ``width`` + 1 ids."""
    parts = []
    for window in windows:
        ids = np.concatenate(window)
        parts += [[BOS], ids[ids >= OFFSET], [EOS]]  # the window's bytes, without its EOD unit
    stream = np.concatenate(parts).astype(np.int64)
    need = rows * (width + 1)
    if len(stream) < need:
        raise SystemExit(f"not enough bytes in the sampled windows for {rows} rows of {width}: add windows")
    return torch.from_numpy(stream[:need]).view(rows, width + 1)


def gemm_flops_per_s(size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/prepared/en-128", help="a prepared directory (blcm prepare)")
    parser.add_argument("--lcm-config", default="configs/tiny.yaml")
    parser.add_argument("--lm-config", default="configs/bytegpt-tiny.yaml")
    parser.add_argument("--lcm-model", help="an exported ByteLCM for generation (default: untrained weights)")
    parser.add_argument("--lm-model", help="an exported ByteGPT for generation (default: untrained weights)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per model per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4, help="documents continued per model for generation")
    parser.add_argument("--gen-units", type=int, default=4, help="ByteLCM: units generated per prompt")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default="benchmarks/out/paradigms.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lcm_args, lcm_data = model_args(args.lcm_config)
    lm_args, lm_data = model_args(args.lm_config)
    lcm = instantiate(ByteLCMModule, {k: v for k, v in lcm_args.items() if k != "export_dir"})
    lm = instantiate(EntropyLMModule, {k: v for k, v in lm_args.items() if k != "export_dir"})
    dataset = PreparedUnits(args.data, "train", lcm_data.get("max_units", 16))
    sampler = iter(BucketBatchSampler(dataset.costs(), lcm_data.get("batch_size", 8), seed=0))
    lm_rows, lm_width = lm_data.get("batch_size", 4), lm_data.get("seq_len", 1024)

    def lcm_batch() -> tuple[UnitBatch, int]:
        batch = collate_units([dataset[i] for i in next(sampler)])
        return batch, int(batch.unit_lengths[batch.has_bytes].sum())

    rng = np.random.default_rng(0)

    def lm_batch() -> tuple[torch.Tensor, int]:
        windows = [dataset[int(i)] for i in rng.integers(len(dataset), size=64)]
        rows = byte_rows(windows, lm_rows, lm_width)
        return rows, int((rows[:, 1:] >= OFFSET).sum())

    optimizers = {"ByteLCM": torch.optim.AdamW(lcm.parameters(), lr=1e-4),
                  "ByteGPT": torch.optim.AdamW(lm.parameters(), lr=1e-4)}
    def lcm_loss(batch: UnitBatch) -> torch.Tensor:
        lcm.model.prepare(batch, "joint")
        return lcm.model.losses(batch, "joint").total

    losses = {"ByteLCM": lcm_loss, "ByteGPT": lambda b: lm.model.loss(b)}
    batches = {"ByteLCM": lcm_batch, "ByteGPT": lm_batch}

    def train_step(name: str, batch) -> None:
        loss = losses[name](batch)
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    times: dict[str, list[float]] = {"ByteLCM": [], "ByteGPT": []}
    step_bytes: dict[str, list[int]] = {"ByteLCM": [], "ByteGPT": []}
    flops: dict[str, list[float]] = {"ByteLCM": [], "ByteGPT": []}
    for name in times:  # warm-up, and FLOPs per step counted once per model on two batches
        for _ in range(2):
            batch, n = batches[name]()
            with FlopCounterMode(display=False) as counter:
                train_step(name, batch)
            flops[name].append(counter.get_total_flops() / n)  # FLOPs per byte
    gemm = []
    for _ in range(args.repeats):
        gemm.append(gemm_flops_per_s())
        for name in times:
            for _ in range(args.steps):
                batch, n = batches[name]()
                times[name].append(timed(lambda b=batch, m=name: train_step(m, b)))
                step_bytes[name].append(n)

    gemm_rate = statistics.median(gemm)
    training = {}
    for name in times:
        rate = sum(step_bytes[name]) / sum(times[name])
        per_byte = statistics.mean(flops[name])
        training[name] = {"bytes_per_step": statistics.mean(step_bytes[name]), "min_s": min(times[name]),
                          "median_s": statistics.median(times[name]), "bytes_per_s": rate,
                          "flops_per_byte": per_byte, "achieved_flops_per_s": per_byte * rate,
                          "share_of_gemm": per_byte * rate / gemm_rate}

    # -- generation -----------------------------------------------------------------------------
    lcm_model = ByteLCM.from_pretrained(args.lcm_model) if args.lcm_model else lcm.model.eval()
    lm_model = EntropyModel.from_pretrained(args.lm_model) if args.lm_model else lm.model.eval()
    prompts = [b"".join(decode(torch.from_numpy(u.astype(np.int64))) for u in dataset[i][:4])
               for i in range(0, len(dataset), max(len(dataset) // args.prompts, 1))][: args.prompts]
    sampling = Sampling(steps=20, guidance_scale=1.0)  # as blcm eval's defaults
    generated = {"ByteLCM": [0, 0.0], "ByteGPT": [0, 0.0]}
    for prompt in prompts:
        start = time.perf_counter()
        out = lcm_model.generate(prompt, max_units=args.gen_units, seed=0, sampling=sampling)
        generated["ByteLCM"][0] += len(out)
        generated["ByteLCM"][1] += time.perf_counter() - start
        start = time.perf_counter()
        budget = min(max(len(out), 64), lm_model.config.context - 1)  # generate() stays within the context
        out_lm = lm_model.generate(prompt, max_new_bytes=budget, stop_at_end=False)
        generated["ByteGPT"][0] += len(out_lm)
        generated["ByteGPT"][1] += time.perf_counter() - start
    generation = {name: {"bytes": n, "seconds": s, "bytes_per_s": n / s if s else float("nan")}
                  for name, (n, s) in generated.items()}

    params = {"ByteLCM": sum(lcm.model.num_params().values()), "ByteGPT": lm.model.num_params()}
    print(f"{torch.get_num_threads()} thread(s); fp32 GEMM (1024^3) {gemm_rate / 1e9:.1f} GFLOP/s (median)")
    print(f"{'model':<8} {'params':>11} {'bytes/step':>10} {'min s':>7} {'median s':>8} {'bytes/s':>8} "
          f"{'MFLOP/byte':>10} {'GFLOP/s':>8} {'of GEMM':>8} {'gen bytes/s':>11}")
    for name, t in training.items():
        print(f"{name:<8} {params[name]:>11,} {t['bytes_per_step']:>10.0f} {t['min_s']:>7.3f} {t['median_s']:>8.3f} "
              f"{t['bytes_per_s']:>8.0f} {t['flops_per_byte'] / 1e6:>10.1f} {t['achieved_flops_per_s'] / 1e9:>8.2f} "
              f"{t['share_of_gemm']:>7.1%} {generation[name]['bytes_per_s']:>11.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "gemm_flops_per_s": gemm_rate, "parameters": params,
                               "training": training, "generation": generation,
                               "settings": vars(args)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
