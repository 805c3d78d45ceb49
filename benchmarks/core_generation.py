"""Concept-generation speed of the five LCM variants on this machine.

For each variant (tiny config, random weights: speed does not depend on the weights):
  * concepts/s when generating a batch of documents (Two-Tower / One-Tower with --steps DDIM steps);
  * at context lengths 16, 64, 256 (batch of --batch documents): the contextualizer's cost of reading
    one more concept through its KV cache (``extend``), next to re-reading the whole document
    (``start``), and the cost of sampling the next concept. With the cache the contextualizer's
    per-step cost stays flat instead of growing with the document.

    .venv/bin/python benchmarks/core_generation.py [--steps 40] [--batch 8] [--repeats 5]
Prints a markdown table and writes JSON (default benchmarks/out/core_generation.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from concept_core.config import build_core, load_config
from concept_core.generate import generate
from concept_core.interface import Sampling

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "one_tower", "two_tower", "quant", "energy")


def tiny_config(variant: str) -> tuple[dict, int]:
    """The two-tower tiny config's sizes, mapped onto each variant's fields, and its concept_dim."""
    tt, concept_dim = load_config(REPO / "configs" / "core" / "two-tower-tiny.yaml")
    return tiny_variant(tt, variant), concept_dim


def tiny_variant(tt: dict, variant: str) -> dict:
    common = dict(model_dim=tt["model_dim"], n_heads=tt["n_heads"])
    layers = tt["context_layers"] + tt["denoiser_layers"]
    if variant == "energy":  # the same contextualizer; the head in place of the denoiser
        return dict(variant=variant, context_layers=tt["context_layers"], head_layers=tt["denoiser_layers"], **common)
    return tt if variant == "two_tower" else dict(variant=variant, n_layers=layers, **common)


def timed(repeats: int, fn, *args, **kwargs) -> list[float]:
    fn(*args, **kwargs)  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        out.append(time.perf_counter() - start)
    return out


def cached_step(model, context, mask, nxt, sampling, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds for ``extend`` (the contextualizer reads one new concept through its KV cache) and for the
    ``sample`` after it, on a state that already holds ``context`` (``start`` is not timed)."""
    extend, sample = [], []
    for _ in range(repeats + 1):  # the first is a warm-up
        state = model.start(context, mask)
        t0 = time.perf_counter()
        state = model.extend(state, nxt)
        t1 = time.perf_counter()
        model.sample(state, sampling)
        t2 = time.perf_counter()
        extend.append(t1 - t0)
        sample.append(t2 - t1)
    return extend[1:], sample[1:]


def prepare(model, variant: str, dim: int, generator: torch.Generator):
    if variant == "quant":
        model.fit_quantizer(torch.nn.functional.normalize(torch.randn(4096, dim, generator=generator), dim=-1))
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40, help="DDIM steps for the diffusion variants (default 40)")
    p.add_argument("--batch", type=int, default=8, help="documents generated at once (default 8)")
    p.add_argument("--new", type=int, default=8, help="concepts generated per document (default 8)")
    p.add_argument("--contexts", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "core_generation.json")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    sampling = Sampling(steps=args.steps)
    rows, results = [], []
    for variant in args.variants:
        config, dim = tiny_config(variant)
        model = prepare(build_core(config, dim), variant, dim, g)
        params = sum(p.numel() for p in model.parameters())
        prompt = torch.nn.functional.normalize(torch.randn(args.batch, 4, dim, generator=g), dim=-1)
        with torch.inference_mode():
            gen = timed(args.repeats, generate, model, prompt, None, eod=None, max_new=args.new,
                        repetition_threshold=None, sampling=sampling)
        rate = [args.batch * args.new / t for t in gen]
        entry = {"variant": variant, "params": params, "concepts_per_s_best": max(rate),
                 "concepts_per_s_median": statistics.median(rate), "per_context": {}}
        rows.append((variant, f"{params:,}", f"{max(rate):.1f}", f"{statistics.median(rate):.1f}", "", "", ""))
        for n in args.contexts:
            context = torch.nn.functional.normalize(torch.randn(args.batch, n, dim, generator=g), dim=-1)
            mask = torch.ones(args.batch, n, dtype=torch.bool)
            nxt = context[:, -1]
            longer = torch.cat([context, nxt[:, None]], dim=1)
            full = torch.ones(longer.shape[:2], dtype=torch.bool)
            with torch.inference_mode():
                extend, sample = cached_step(model, context, mask, nxt, sampling, args.repeats)
                reread = timed(args.repeats, model.start, longer, full)  # the contextualizer without a cache
            ms = {"extend_ms": 1e3 * statistics.median(extend), "reread_ms": 1e3 * statistics.median(reread),
                  "sample_ms": 1e3 * statistics.median(sample)}
            entry["per_context"][n] = ms
            rows.append((f"  context {n}", "", "", "", f"{ms['extend_ms']:.1f} ms", f"{ms['reread_ms']:.1f} ms",
                         f"{ms['sample_ms']:.1f} ms"))
        results.append(entry)

    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}, "
          f"DDIM steps {args.steps}, batch {args.batch}")
    print("| variant | params | concepts/s (best) | concepts/s (median) | contextualizer: extend (cached) "
          "| contextualizer: re-read all | sample next |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(), "torch": torch.__version__,
                                    "threads": torch.get_num_threads(), "machine": platform.uname()._asdict(),
                                    "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                   indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
