"""Throughput of the entropy model and the patcher on CPU, next to what the hardware could do.

Measures, in one run and on one machine state:

1. fp32 GEMM throughput (a 2048^3 matmul), the yardstick for everything else;
2. ``EntropyModel.entropies`` bytes/s, on rows of ``context`` bytes and on long rows (4x context)
   that go through the overlapping-window path;
3. ``Patcher`` bytes/s for the entropy, monotonic, space and static modes on precomputed entropies;
4. entropy + patching end to end;
5. the FLOP limit: the bytes/s the model would reach running at the measured GEMM rate with
   2 x num_params FLOPs per byte, and the fraction of it achieved.

Prints a markdown table and writes the numbers, the machine and the model config to JSON.
Nothing is asserted: this is a measuring tool, not a test.

    .venv/bin/python benchmarks/patching.py --help
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from blcm.data.documents import read_jsonl
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import pad_batch
from blt.patching import Patcher

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "runs" / "entropy-tiny" / "export"
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "en" / "valid.jsonl.gz"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "patching.json"
TARGET_PATCH_SIZE = 4.5
GEMM_N = 2048
# Fast calls (a patcher pass takes milliseconds) are looped until one sample lasts this long,
# so timer resolution and scheduler noise do not dominate the sample.
MIN_SAMPLE_S = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Prints a markdown table and writes JSON.",
        epilog="Default paths are relative to the repository root, so the script runs from any directory.",
    )
    p.add_argument("--model", type=Path, default=None,
                   help=f"exported EntropyModel directory (config.json + model.safetensors); default "
                        f"{DEFAULT_MODEL.relative_to(REPO)} if it exists, else a fresh model with random "
                        "weights (throughput does not depend on the weights; patch sizes do)")
    p.add_argument("--input", type=Path, default=None,
                   help="gzip JSONL whose `text` fields are concatenated into the byte stream; default "
                        "../shared/data/en/valid.jsonl.gz if present, else deterministic pseudo-text")
    p.add_argument("--bytes", type=int, default=262_144,
                   help="bytes to patch, scored once by the model to get their entropies (default %(default)s)")
    p.add_argument("--model-bytes", type=int, default=16_384,
                   help="bytes per repeated entropy-model timing (a prefix of --bytes); the model runs at "
                        "~10-20 KB/s on 2 CPU cores, so repeating it over all --bytes would take minutes "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="windows per forward pass in entropies() (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed samples per measurement, reported as min and median (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"JSON output path, directories are created (default {DEFAULT_OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    for name in ("bytes", "model_bytes", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.input is not None and not args.input.is_file():
        p.error(f"--input {args.input} is not a file")
    if args.model is not None and not args.model.is_dir():
        p.error(f"--model {args.model} is not a directory")
    return args


# ---------------------------------------------------------------------------------------------
# Inputs


def load_model(path: Path | None) -> tuple[EntropyModel, str]:
    if path is None and DEFAULT_MODEL.is_dir():
        path = DEFAULT_MODEL
    if path is None:
        torch.manual_seed(0)
        return EntropyModel(EntropyModelConfig()).eval(), "random weights (no exported model found)"
    return EntropyModel.from_pretrained(path), str(path)


def pseudo_text(n: int) -> bytes:
    """Deterministic English-like bytes: words of varied length, spaces, punctuation, newlines."""
    rng = random.Random(0)
    words = ["the", "of", "and", "a", "to", "in", "is", "patch", "entropy", "byte", "model", "concept",
             "sentence", "language", "transformer", "throughput", "2024", "x", "latent", "boundary"]
    out, size = [], 0
    while size < n:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
        sentence = sentence.capitalize() + rng.choice([". ", ". ", ", ", "? ", ".\n"])
        out.append(sentence)
        size += len(sentence)
    return "".join(out).encode()[:n]


def load_bytes(path: Path | None, n: int) -> tuple[bytes, str]:
    if path is None and DEFAULT_INPUT.is_file():
        path = DEFAULT_INPUT
    if path is None:
        return pseudo_text(n), "deterministic pseudo-text (no input file found)"
    chunks, size = [], 0
    for _, record in read_jsonl(path):
        text = record["text"].encode()
        chunks.append(text)
        size += len(text) + 1
        if size >= n:
            break
    data = b"\n".join(chunks)
    source = str(path)
    if len(data) < n:  # a short file is cycled rather than silently benchmarking fewer bytes
        source += f" (only {len(data)} bytes, repeated)"
        data = data * math.ceil(n / len(data))
    return data[:n], source


def rows(data: bytes, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut bytes into right-padded rows of `width` bytes: (ids (B, width), lengths (B,))."""
    return pad_batch([data[i : i + width] for i in range(0, len(data), width)], pad_to=width)


# ---------------------------------------------------------------------------------------------
# Timing


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`, one entry per repeat, after `warmup` untimed calls.

    A sample shorter than MIN_SAMPLE_S is made of several calls and divided by their number.
    """
    calls = 1
    for _ in range(warmup):
        t = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t
        calls = max(1, math.ceil(MIN_SAMPLE_S / max(elapsed, 1e-9)))
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls)
    return samples


def record(name: str, seconds: list[float], work: float, unit: str = "bytes/s", notes: str = "",
           **extra) -> dict:
    """A measurement: `work` units per call, timed by `seconds`. Best = min time, i.e. max rate."""
    return {"name": name, "unit": unit, "work_per_call": work, "seconds": seconds,
            "seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
            "rate_best": work / min(seconds), "rate_median": work / statistics.median(seconds),
            "notes": notes, **extra}


# ---------------------------------------------------------------------------------------------
# Measurements


def gemm_seconds(repeats: int) -> list[float]:
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    out = torch.empty(GEMM_N, GEMM_N)
    return measure(lambda: torch.matmul(a, b, out=out), repeats)


def gemm_record(seconds: list[float]) -> dict:
    return record(f"GEMM fp32 {GEMM_N}^3", seconds, 2 * GEMM_N**3, unit="FLOP/s",
                  notes="2n^3 / time, sampled before and after the model runs; the yardstick for the FLOP limit")


def scored_positions(length: int, context: int) -> int:
    """Positions entropies() runs the model on for one row: later windows overlap by context/2."""
    if length <= context:
        return context
    stride = context - context // 2
    return context + math.ceil((length - context) / stride) * context


def bench_entropies(model: EntropyModel, data: bytes, width: int, args, warmup: int, label: str) -> dict:
    ids, lengths = rows(data, width)
    context = model.config.context
    positions = ids.shape[0] * scored_positions(width, context)
    seconds = measure(lambda: model.entropies(ids, lengths, batch_size=args.batch_size), args.repeats, warmup)
    notes = f"rows of {width} bytes"
    if width > context:
        notes += f", overlapping windows: model runs {positions / len(data):.2f} positions per byte"
    return record(label, seconds, len(data), notes=notes, row_bytes=width, positions_scored=positions)


def calibrated_patchers(ids, lengths, entropies) -> tuple[dict[str, Patcher], dict[str, str]]:
    """One patcher per mode; entropy modes get the threshold that gives TARGET_PATCH_SIZE on this sample."""
    patchers, problems = {}, {}
    for mode in ("entropy", "monotonic"):
        try:
            threshold = Patcher(mode).calibrate(ids, lengths, entropies, TARGET_PATCH_SIZE)
        except ValueError as err:  # random weights can give entropies too flat to reach the target
            problems[mode] = str(err)
            continue
        patchers[mode] = Patcher(mode, threshold=threshold)
    patchers["space"] = Patcher("space")
    patchers["static"] = Patcher("static", patch_size=4)
    return patchers, problems


def mean_patch_size(patcher: Patcher, ids, lengths, entropies) -> float:
    return int(lengths.sum()) / int(patcher(ids, lengths, entropies).counts.sum())


def bench_patchers(patchers: dict[str, Patcher], ids, lengths, entropies, repeats: int) -> list[dict]:
    results = []
    n = int(lengths.sum())
    for mode, patcher in patchers.items():
        seconds = measure(lambda patcher=patcher: patcher(ids, lengths, entropies), repeats)
        size = mean_patch_size(patcher, ids, lengths, entropies)
        notes = f"mean patch {size:.2f} B"
        if patcher.threshold is not None:
            notes += f", threshold {patcher.threshold:.3f} nats"
        elif mode == "static":
            notes += f", patch_size {patcher.patch_size}"
        results.append(record(f"patching: {mode}", seconds, n, notes=notes + "; entropies precomputed",
                              mode=mode, threshold=patcher.threshold, mean_patch_size=size))
    return results


def bench_end_to_end(model: EntropyModel, patcher: Patcher, data: bytes, args) -> dict:
    ids, lengths = rows(data, model.config.context)

    def run():
        return patcher(ids, lengths, model.entropies(ids, lengths, batch_size=args.batch_size))

    seconds = measure(run, args.repeats, warmup=0)  # the model is warm from the runs before
    return record(f"end to end: entropies + {patcher.mode} patching", seconds, len(data),
                  notes=f"rows of {model.config.context} bytes, threshold fixed (calibration is one-off)")


def flop_limits(model: EntropyModel, gemm: dict, measured: dict) -> list[dict]:
    """Bytes/s at the GEMM rate with 2 x params FLOPs/byte, and with attention added as well."""
    cfg = model.config
    params = model.num_params()
    per_byte = 2 * params
    # Causal attention per byte per layer: QK^T and AV, 2*dim FLOPs per visible key each, and a
    # row of `context` bytes sees context/2 keys on average (ignoring the masked half SDPA may compute).
    attention = cfg.n_layers * 4 * cfg.dim * (cfg.context / 2)
    results = []
    for label, flops, note in [
        ("FLOP limit: 2 x params", per_byte,
         "optimistic: attention FLOPs are extra (embedding lookups in params cost none, a small offset)"),
        ("FLOP limit: 2 x params + attention (est.)", per_byte + attention,
         f"attention ~{attention / 1e6:.2f} MFLOP/byte at {cfg.context}-byte rows"),
    ]:
        best = gemm["rate_best"] / flops
        median = gemm["rate_median"] / flops
        frac = measured["rate_best"] / best
        results.append({"name": label, "unit": "bytes/s", "flops_per_byte": flops, "rate_best": best,
                        "rate_median": median, "fraction_achieved": frac,
                        "notes": f"{note}; achieved {100 * frac:.0f}% (best vs best)"})
    return results


# ---------------------------------------------------------------------------------------------
# Output


def fmt_rate(rate: float) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.3g} {prefix}"
    return f"{rate:.3g} "


def table(results: list[dict]) -> str:
    lines = ["| measurement | best (min time) | median | notes |", "|---|---:|---:|---|"]
    for r in results:
        unit = r["unit"]
        lines.append(f"| {r['name']} | {fmt_rate(r['rate_best'])}{unit} | {fmt_rate(r['rate_median'])}{unit} "
                     f"| {r['notes']} |")
    return "\n".join(lines)


def machine_info() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(),
            "uname": platform.uname()._asdict(), "python": sys.version.split()[0], "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average": load_average()}


def load_average() -> list[float] | None:
    """1/5/15-minute load: other processes on the CPUs make every timing here slower and noisier."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, model_source = load_model(args.model)
    data, input_source = load_bytes(args.input, args.bytes)
    model_bytes = min(args.model_bytes, len(data))
    context = model.config.context
    print(f"model: {model_source}; {model.num_params():,} params; {asdict(model.config)}")
    print(f"input: {input_source}; {len(data):,} bytes (model timings on the first {model_bytes:,})")
    load_before = load_average()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load_before}\n")

    results = []
    with torch.inference_mode():
        # The GEMM yardstick is sampled at both ends of the run and pooled, so that other load at
        # one moment skews the FLOP limit less (a slow yardstick would flatter the model).
        gemm_before = gemm_seconds(args.repeats)

        # One pass over every byte gives the entropies that patching needs; it also warms the
        # model up on the same window shape, so the timed model runs below need no warm-up call.
        ids, lengths = rows(data, context)
        t = time.perf_counter()
        entropies = model.entropies(ids, lengths, batch_size=args.batch_size)
        results.append(record(f"entropy model, all {len(data):,} bytes (1 pass)", [time.perf_counter() - t],
                              len(data), notes=f"rows of {context} bytes; single sample, no warm-up"))

        short = bench_entropies(model, data[:model_bytes], context, args, 0, "entropy model")
        long = bench_entropies(model, data[:model_bytes], 4 * context, args, 0, "entropy model, long rows")
        results += [short, long]

        t = time.perf_counter()
        patchers, problems = calibrated_patchers(ids, lengths, entropies)
        calibration_s = time.perf_counter() - t
        results += bench_patchers(patchers, ids, lengths, entropies, args.repeats)

        e2e_patcher = patchers.get("entropy") or patchers["static"]
        results.append(bench_end_to_end(model, e2e_patcher, data[:model_bytes], args))
        gemm = gemm_record(gemm_before + gemm_seconds(args.repeats))
        results.insert(0, gemm)
        results += flop_limits(model, gemm, short)

    print(table(results))
    for mode, err in problems.items():
        print(f"\n{mode} mode skipped: {err}")
    runtime = time.perf_counter() - started
    print(f"\ntotal {runtime:.0f} s; load average before {load_before}, after {load_average()} "
          "(load from other processes makes the numbers noisy)")

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_before": load_before,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {"source": model_source, "num_params": model.num_params(),
                  "num_params_without_embedding": model.num_params() - model.embed.weight.numel(),
                  "config": asdict(model.config)},
        "input": {"source": input_source, "bytes": len(data), "model_bytes": model_bytes},
        "target_patch_size": TARGET_PATCH_SIZE,
        "calibration_seconds": calibration_s,
        "skipped_modes": problems,
        "measurements": results,
        "runtime_seconds": runtime,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
