"""Train and package the chunk codec that ships inside byte-lcm (bridges/pretrained/chunk-codec): the spelling,
exact on any bytes.

    python tools/ship_codec.py train --minutes 70                # a run from scratch: runs/ship-codec
    python tools/ship_codec.py train --minutes 20 --resume       # on from its last checkpoint, batch-exactly
    python tools/ship_codec.py package                           # fp16 vs fp32, the held-out report, weights + SHA-256
    python tools/ship_codec.py package --export runs/B/export --no-ship --out runs/B/report   # a candidate's report

``train`` draws every batch from tools/codec_data.py's mixture: every shared text (en, multilingual, each locale of
parallel, train splits only), uniform random bytes, synthetic UTF-8 of every Unicode script but the held-out ones,
and spans of the train split of the WAV and PNG files; ``--mix`` sets the shares. The decoder reads the latents
with Gaussian noise (``--noise``, σ relative to their unit RMS) and dropout, so a nearby concept decodes to the same
bytes. Every ``--eval-minutes`` it appends the exact-match share of held-out sets to runs/<name>/curve.jsonl, writes
a checkpoint it can resume from and exports the codec to runs/<name>/export. ``package`` then

* measures exact match with fp16 and fp32 weights and ships fp16 unless it costs more than
  ``FP16_TOLERANCE`` of exact match on any held-out set,
* scores the held-out sets (``held_out_sets``: every valid text set, random bytes, the held-out WAV and PNG files
  in 128-byte spans, every held-out and every training script) clean and with Gaussian noise on the latents,
* writes config.json and model.safetensors into the package, their SHA-256 into
  bridges/pretrained/__init__.py's ``PINNED``, and a report to benchmarks/results/shipped-codec.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from codec_data import (  # noqa: E402
    HELD_OUT_SCRIPTS,
    SHARED,
    SOURCES,
    UNIT_BYTES,
    Mixture,
    binary_files,
    binary_spans,
    check_held_out_scripts,
    script_unit,
    text_units,
    training_scripts,
)
from curve_log import record  # noqa: E402

from blcm.eval.codec import codec_scores, exact_matches  # noqa: E402
from blt.ids import pad_batch  # noqa: E402
from bridges.chunk_codec import ChunkCodecConfig, ChunkConceptCodec  # noqa: E402
from bridges.pretrained import SHIPPED_CODEC, load_codec, save_codec  # noqa: E402

RUNS = REPO / "runs"
FP16_TOLERANCE = 0.002  # exact-match share fp16 weights may cost before fp32 is kept
NOISE = (0.1, 0.2, 0.5)  # σ of the Gaussian noise decoded under, relative to the unit-RMS latents
WARMUP_STEPS = 100


def held_out_sets(max_units: int, per_script: int = 100, seed: int = 0) -> dict[str, list[bytes]]:
    """What the report and the curve score: up to ``max_units`` seeded units of every valid text set (en,
    multilingual, each locale of parallel, wrapped), random bytes, the held-out WAV and PNG files in 128-byte spans,
    and synthetic units of every held-out script ("unseen script/NAME") and of every training script ("script/NAME",
    new units of scripts the codec trained on)."""
    rng = random.Random(seed)
    sample = lambda units: rng.sample(units, min(max_units, len(units)))  # noqa: E731
    sets = {f"{name}/valid": sample(units) for name, units in text_units("valid").items()}
    sets["random bytes"] = [rng.randbytes(rng.randint(1, UNIT_BYTES)) for _ in range(min(max_units, 5000))]
    for kind, files in binary_files("valid").items():
        sets[f"{kind} spans"] = sample(binary_spans(files))
    for script in HELD_OUT_SCRIPTS:
        sets[f"unseen script/{script}"] = [script_unit(rng, script) for _ in range(per_script)]
    for script in training_scripts():
        sets[f"script/{script}"] = [script_unit(rng, script) for _ in range(per_script)]
    return sets


def curve_sets(seed: int = 0) -> dict[str, list[bytes]]:
    """The curve's smaller sets: 512 units of en/valid, multilingual/valid, parallel/valid (every locale pooled),
    random bytes, WAV and PNG spans, unseen scripts and training scripts (pooled)."""
    sets = held_out_sets(512, 50, seed)
    rng, pooled = random.Random(seed), {}
    for name, prefix in (("parallel/valid", "parallel/"), ("unseen scripts", "unseen script/"),
                         ("scripts", "script/")):
        units = [u for n, units in sets.items() if n.startswith(prefix) for u in units]
        pooled[name] = rng.sample(units, min(512, len(units)))
    keep = ("en/valid", "multilingual/valid", "random bytes", "wav spans", "png spans")
    return {**{n: sets[n] for n in keep}, **pooled}


@torch.no_grad()
def evaluate(codec: ChunkConceptCodec, sets: dict[str, list[bytes]]) -> dict[str, float]:
    """The share of each set's units that decode back byte for byte; for a few sets also with Gaussian noise of σ
    on the latents (one seeded draw, so every row of a curve sees the same noise)."""
    codec.eval()
    concepts = {name: codec.encode(units) for name, units in sets.items()}
    row = {name: exact_matches(codec, concepts[name], units) / len(units) for name, units in sets.items()}
    for name, sigma in (("en/valid", 0.2), ("en/valid", 0.5), ("random bytes", 0.2)):
        noise = torch.randn(concepts[name].shape, generator=torch.Generator().manual_seed(0))
        row[f"{name} σ={sigma}"] = exact_matches(codec, concepts[name] + sigma * noise, sets[name]) / len(sets[name])
    codec.train()
    return row


def cmd_train(args) -> int:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the shipped codec trains on the shared corpora")
    torch.manual_seed(args.seed)
    run = RUNS / args.name
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = run / "last.pt"
    state = torch.load(checkpoint, weights_only=True) if args.resume else None
    if state is not None:  # the run's recipe is the checkpoint's, whatever the flags say
        args = argparse.Namespace(**{**state["args"], "minutes": args.minutes, "resume": True})
    config = ChunkCodecConfig(chunk_bytes=args.chunk_bytes, hidden=args.hidden, layers=args.layers)
    codec = ChunkConceptCodec(config, args.concept_dim)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=args.lr, weight_decay=0.01)
    texts = text_units("train")
    check_held_out_scripts(texts)
    binaries = binary_files("train")
    weights = dict(zip(SOURCES, args.mix, strict=True))
    mixture = Mixture([u for units in texts.values() for u in units], binaries["wav"] + binaries["png"], weights,
                      args.seed)
    sets = curve_sets()
    step, elapsed = 0, 0.0
    if state is not None:
        codec.load_state_dict(state["codec"])
        optimizer.load_state_dict(state["optimizer"])
        mixture.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed"]
    saved_args = {k: v for k, v in vars(args).items() if k != "run"}
    (run / "args.json").write_text(json.dumps(saved_args, indent=1) + "\n")
    budget, schedule = elapsed + args.minutes * 60, args.schedule_minutes * 60
    start, next_eval = time.time() - elapsed, (int(elapsed / 60 / args.eval_minutes) + 1) * args.eval_minutes * 60
    print(f"chunk codec: {sum(p.numel() for p in codec.parameters()):,} parameters; mix {weights}; "
          f"{len(mixture.texts):,} text units; from step {step}", flush=True)
    with open(run / "curve.jsonl", "a") as curve:
        while True:
            elapsed = time.time() - start
            # a scheduled row within half a period of the budget's end would twin the final row: skip it
            if elapsed >= budget or elapsed >= next_eval and budget - elapsed > args.eval_minutes * 30:
                record(curve, {"step": step, "minutes": elapsed / 60, **evaluate(codec, sets)}, checkpoint,
                       {"codec": codec.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "elapsed": time.time() - start, "generator": mixture.generator.get_state(),
                        "torch_rng": torch.get_rng_state(), "args": saved_args})
                save_codec(codec, run / "export")
                while next_eval <= elapsed:
                    next_eval += args.eval_minutes * 60
                if elapsed >= budget:
                    return 0
            # warm-up over WARMUP_STEPS, then a cosine to a tenth of the peak over the schedule's minutes
            decay = 0.1 + 0.45 * (1 + math.cos(math.pi * min(elapsed / schedule, 1.0)))
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / WARMUP_STEPS) * decay
            ids, lengths = pad_batch(mixture.batch(args.batch_size))
            concepts = codec.concepts(ids, lengths)
            noisy = F.dropout(concepts, args.latent_dropout) + args.noise * torch.randn_like(concepts)
            loss = codec.scores(ids, lengths, noisy).nats.sum() / (lengths + 1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
            optimizer.step()
            step += 1


def score(codec: ChunkConceptCodec, units: list[bytes]) -> dict[str, float]:
    scores = codec_scores(codec, units, NOISE)
    keys = ("units", "exact", *(f"exact_sigma_{s:g}" for s in NOISE), "teacher_forced_byte_accuracy", "bpb")
    return {k: scores[k] for k in keys}


def markdown(rows: dict[str, dict]) -> str:
    keys = ["units", "exact", *(f"exact_sigma_{s:g}" for s in NOISE), "teacher_forced_byte_accuracy", "bpb"]
    lines = ["| set | " + " | ".join(k.replace("exact_sigma_", "exact σ=") for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for name, row in rows.items():
        cells = [f"{row[k]:d}" if k == "units" else f"{row[k]:.4f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(rows: dict[str, dict]) -> dict[str, float]:
    """The issue's headline figures from the per-set rows."""
    mean = lambda names: sum(rows[n]["exact"] for n in names) / len(names)  # noqa: E731
    locales = [n for n in rows if n.startswith("parallel/")]
    unseen = [n for n in rows if n.startswith("unseen script/")]
    scripts = [n for n in rows if n.startswith("script/")]
    return {"en/valid": rows["en/valid"]["exact"], "multilingual/valid": rows["multilingual/valid"]["exact"],
            "parallel/valid mean over locales": mean(locales),
            "parallel/valid lowest locale": min(rows[n]["exact"] for n in locales),
            "random bytes": rows["random bytes"]["exact"], "wav spans": rows["wav spans"]["exact"],
            "png spans": rows["png spans"]["exact"], "unseen scripts mean": mean(unseen),
            "unseen scripts lowest": min(rows[n]["exact"] for n in unseen), "training scripts mean": mean(scripts),
            "training scripts lowest": min(rows[n]["exact"] for n in scripts),
            "en/valid σ=0.2 / clean": rows["en/valid"]["exact_sigma_0.2"] / max(rows["en/valid"]["exact"], 1e-9)}


def cmd_package(args) -> int:
    from blt.pretrained import pin_files, write_pins

    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the report scores the shared held-out sets")
    torch.manual_seed(0)
    codec = load_codec(args.export)
    half = args.export.parent / "fp16"
    save_codec(codec, half, torch.float16)
    candidates = {"fp32": codec, "fp16": load_codec(half)}
    sets = held_out_sets(args.units, args.script_units)
    rows = {dtype: {} for dtype in candidates}
    for name, units in sets.items():
        for dtype, candidate in candidates.items():
            rows[dtype][name] = score(candidate, units)
        print(f"{name:32s} exact fp32 {rows['fp32'][name]['exact']:.4f} fp16 {rows['fp16'][name]['exact']:.4f} "
              f"σ=0.2 {rows['fp16'][name]['exact_sigma_0.2']:.4f}", flush=True)
    cost = max(rows["fp32"][n]["exact"] - rows["fp16"][n]["exact"] for n in sets)
    dtype = "fp16" if cost <= FP16_TOLERANCE else "fp32"
    pins = None
    if args.ship:
        save_codec(codec, SHIPPED_CODEC, torch.float16 if dtype == "fp16" else torch.float32)
        pins = pin_files(SHIPPED_CODEC, ["config.json", "model.safetensors"])
        write_pins(REPO / "bridges" / "pretrained" / "__init__.py", pins)

    shipped = rows[dtype]
    summary = summarise(shipped)
    report = {"export": str(args.export.relative_to(REPO) if args.export.is_relative_to(REPO) else args.export),
              "dtype": dtype, "fp16_cost_exact": cost, "params": sum(p.numel() for p in codec.parameters()),
              "config": {"concept_dim": codec.concept_dim, **vars(codec.config)}, "summary": summary, "sets": shipped,
              "fp32": rows["fp32"], "pinned": pins, "held_out_scripts": list(HELD_OUT_SCRIPTS),
              "machine": f"{platform.node()} {platform.platform()}",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(shipped)
    out.with_suffix(".md").write_text("\n".join(f"- {k}: {v:.4f}" for k, v in summary.items()) + "\n\n" + table + "\n")
    print("\n".join(f"{k}: {v:.4f}" for k, v in summary.items()))
    shipped_to = f"shipped {SHIPPED_CODEC.relative_to(REPO)}" if args.ship else "not shipped (--no-ship)"
    print(f"{shipped_to} ({dtype}; fp16 cost {cost:.4f} exact), report {out}.json/.md")
    return 0


CURVE_COLUMNS = ("en/valid", "en/valid σ=0.2", "en/valid σ=0.5", "multilingual/valid", "parallel/valid", "scripts",
                 "unseen scripts", "random bytes", "random bytes σ=0.2", "wav spans", "png spans")


def cmd_curves(args) -> int:
    """Training curves side by side: a table (md + json) and a figure of exact match against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for run in args.runs:
        if not (run / "curve.jsonl").is_file():
            sys.exit(f"{run} has no curve.jsonl: name runs/<name> folders of tools/ship_codec.py train")
        recipe = json.loads((run / "args.json").read_text())
        curves[run.name] = {"args": recipe, "rows": [json.loads(line) for line in (run / "curve.jsonl").open()]}
    lines = ["| run | minutes | steps | " + " | ".join(CURVE_COLUMNS) + " |",
             "|---|" + "---:|" * (len(CURVE_COLUMNS) + 2)]
    for name, curve in curves.items():
        for row in curve["rows"]:
            lines.append(f"| {name} | {row['minutes']:.0f} | {row['step']} | "
                         + " | ".join(f"{row[c]:.3f}" if c in row else "–" for c in CURVE_COLUMNS) + " |")
    table = "\n".join(lines)
    clean = [c for c in CURVE_COLUMNS if "σ" not in c]
    panels = (("lowest exact match over the clean sets", lambda r: min(r[c] for c in clean)),
              ("en/valid exact at σ 0.5", lambda r: r.get("en/valid σ=0.5")))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for axis, (title, value) in zip(axes, panels, strict=True):
        for name, curve in curves.items():
            points = [(r["minutes"], value(r)) for r in curve["rows"] if value(r) is not None]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=name)
        axis.set(title=title, xlabel="minutes (one core)")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("exact match")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(curves, indent=1) + "\n")
    print(table)
    print(f"wrote {args.out}.md, .json and .png")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    t = commands.add_parser("train", help="train the codec on the mixture (see above)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--name", default="ship-codec", help="the run's folder under runs/")
    t.add_argument("--minutes", type=float, default=70.0, help="this invocation's wall-clock budget")
    t.add_argument("--schedule-minutes", type=float, default=70.0,
                   help="the cosine learning-rate schedule's length (a resumed run keeps its own)")
    t.add_argument("--resume", action="store_true", help="go on from runs/<name>/last.pt with its recipe")
    t.add_argument("--mix", type=float, nargs=4, default=[0.55, 0.15, 0.15, 0.15], metavar=("TEXT", "RANDOM",
                   "SCRIPTS", "BINARY"), help="shares of each source in a batch")
    t.add_argument("--chunk-bytes", type=int, default=8, help="bytes per chunk (concept_dim / (128 / chunk) each)")
    t.add_argument("--hidden", type=int, default=512, help="the MLPs' hidden width")
    t.add_argument("--layers", type=int, default=1, help="hidden layers per MLP")
    t.add_argument("--concept-dim", type=int, default=1024)
    t.add_argument("--noise", type=float, default=0.3, help="σ of the latents' training noise")
    t.add_argument("--latent-dropout", type=float, default=0.0, help="dropout on the latents in training")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--eval-minutes", type=float, default=5.0, help="minutes between curve rows and checkpoints")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(run=cmd_train)
    p = commands.add_parser("package", help="measure the trained codec and ship its weights")
    p.add_argument("--export", type=Path, default=RUNS / "ship-codec" / "export", help="the trained codec's export")
    p.add_argument("--units", type=int, default=100_000,
                   help="at most this many units scored per held-out text, binary and random set (default: all)")
    p.add_argument("--script-units", type=int, default=200, help="synthetic units scored per script")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "shipped-codec",
                   help="prefix of the report's .json and .md")
    p.add_argument("--no-ship", dest="ship", action="store_false",
                   help="measure and report only: leave the package's codec and pins as they are (compare candidates)")
    p.set_defaults(run=cmd_package)
    c = commands.add_parser("curves", help="tabulate and plot training curves side by side")
    c.add_argument("runs", type=Path, nargs="+", help="runs/<name> folders of train")
    c.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "codec-any-bytes",
                   help="prefix of the .md, .json and .png written")
    c.set_defaults(run=cmd_curves)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
