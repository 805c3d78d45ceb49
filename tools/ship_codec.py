"""Train and package the chunk codec that ships inside byte-lcm (bridges/pretrained/chunk-codec).

    python tools/ship_codec.py train              # corpus + blcm prepare + blcm fit --config configs/codec-chunk.yaml
    python tools/ship_codec.py train --resume     # the same run, on from its last checkpoint
    python tools/ship_codec.py package            # fp16 vs fp32, the held-out report, weights + SHA-256

The codec must read more than English, so ``train`` builds one corpus from every shared text corpus
(../shared/data): en/train, multilingual/train and every language of parallel/train as its own document
(source ``parallel/<locale>``), with the matching valid files held out. ``package`` then

* measures exact match with fp16 and fp32 weights and ships fp16 unless it costs more than
  ``FP16_TOLERANCE`` of exact match on any held-out set,
* scores the held-out sets (en/valid, multilingual/valid, each locale of parallel/valid, random bytes, the
  WAV and PNG files cut into 128-byte spans) clean and with Gaussian noise on the latents,
* writes config.json and model.safetensors into the package, their SHA-256 into
  bridges/pretrained/__init__.py's ``PINNED``, and a report to benchmarks/results/shipped-codec.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
RUN = REPO / "runs" / "ship-codec"
PREPARED = REPO / "runs" / "prepared" / "ship-codec-128"
UNIT_BYTES = 128
FP16_TOLERANCE = 0.002  # exact-match share fp16 weights may cost before fp32 is kept
NOISE = (0.1, 0.2, 0.5)  # σ of the Gaussian noise decoded under, relative to the unit-RMS latents
WRAPPED_PERCENT = 10  # en and multilingual documents that also appear hard-wrapped


def wrap(text: str, width: int = 72) -> str:
    """Hard-wrapped paragraphs (README files, e-mail, plain-text books): sentences with newlines inside."""
    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def corpus_records(split: str):
    """Every shared text document of one split as {id, source, text}: parallel text one per language, and a
    hard-wrapped copy of WRAPPED_PERCENT of en and multilingual (the corpora wrap almost no sentence: 0.08%
    of units hold a newline inside)."""
    from blcm.data.corpus import in_valid_split
    from blcm.data.documents import iter_records, read_jsonl

    for name in ("en", "multilingual"):
        for doc in iter_records([str(SHARED / name / f"{split}.jsonl.gz")]):
            yield {"id": f"{name}/{doc.key}", "source": doc.source, "text": doc.data.decode()}
            if in_valid_split(doc.key, WRAPPED_PERCENT):
                yield {"id": f"wrapped/{name}/{doc.key}", "source": f"wrapped/{name}", "text": wrap(doc.data.decode())}
    for _, record in read_jsonl(SHARED / "parallel" / f"{split}.jsonl.gz"):
        for locale, text in record.items():
            if locale not in ("id", "source"):
                yield {"id": f"parallel/{record['id']}/{locale}", "source": f"parallel/{locale}", "text": text}


def write_corpus() -> dict[str, Path]:
    """runs/ship-codec/corpus/{train,valid}.jsonl.gz (written once)."""
    out = {}
    for split in ("train", "valid"):
        path = RUN / "corpus" / f"{split}.jsonl.gz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            with gzip.open(partial, "wt", encoding="utf-8") as f:
                for record in corpus_records(split):
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
            partial.rename(path)
        out[split] = path
    return out


def run(command: list[str]) -> None:
    print("$", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), cwd=REPO, check=True)


def cmd_train(args) -> int:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the shipped codec trains on the shared corpora")
    corpus = write_corpus()
    blcm = [sys.executable, "-m", "blcm.cli"]
    run([*blcm, "prepare", corpus["train"], "--valid", corpus["valid"], "--max-unit-bytes", UNIT_BYTES,
         "--out", PREPARED, "--no-progress"])
    fit = [*blcm, "fit", "--config", REPO / "configs" / "codec-chunk.yaml", "--data.data_dir", PREPARED,
           "--trainer.max_time", args.max_time, "--model.optim.decay_steps", args.decay_steps,
           "--trainer.logger.init_args.name", "ship-codec", "--trainer.logger.init_args.version", "run",
           "--model.export_dir", RUN / "export", "--trainer.enable_progress_bar", "false"]
    if args.resume:
        fit += ["--ckpt_path", REPO / "runs" / "ship-codec" / "run" / "checkpoints" / "last.ckpt"]
    start = time.time()
    run(fit + args.extra)
    print(f"wall time {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


def held_out_sets(max_units: int) -> dict[str, list[bytes]]:
    """What the report scores, cut as training cut them (sentences of at most 128 bytes): up to ``max_units``
    seeded units of en/valid, of multilingual/valid and of each locale of parallel/valid; random bytes; the WAV
    and PNG files in 128-byte spans (the codec never trained on either)."""
    import random

    from blcm.data.prepare import make_segmenter

    segment = make_segmenter("sentence", UNIT_BYTES).split
    by_source: dict[str, list[bytes]] = {}
    for record in corpus_records("valid"):
        source = record["source"]
        name = source if source.startswith(("parallel/", "wrapped/")) else record["id"].split("/")[0]
        by_source.setdefault(f"{name}/valid", []).extend(segment(record["text"].encode()))
    rng = random.Random(0)
    sets = {name: rng.sample(units, min(max_units, len(units))) for name, units in sorted(by_source.items())}
    sets["random bytes"] = [rng.randbytes(rng.randint(1, UNIT_BYTES)) for _ in range(min(max_units, 1000))]
    for kind, folder in (("wav", "speech-en"), ("png", "images")):
        spans = [data[i : i + UNIT_BYTES] for p in sorted((SHARED / "bytes" / folder).glob(f"*.{kind}"))
                 for data in [p.read_bytes()] for i in range(0, len(data), UNIT_BYTES)]
        sets[f"{kind} spans"] = rng.sample(spans, min(max_units, len(spans)))
    return sets


def score(codec, units: list[bytes]) -> dict[str, float]:
    from blcm.eval.codec import codec_scores

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


def cmd_package(args) -> int:
    import torch

    from blcm.model import ByteLCM
    from blt.pretrained import pin_files, write_pins
    from bridges.pretrained import SHIPPED_CODEC, load_codec, save_codec

    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the report scores the shared held-out sets")
    torch.manual_seed(0)
    codec = ByteLCM.from_pretrained(args.export).codec.eval()
    half = RUN / "fp16"
    save_codec(codec, half, torch.float16)
    candidates = {"fp32": codec, "fp16": load_codec(half)}
    sets = held_out_sets(args.units)
    rows = {dtype: {} for dtype in candidates}
    for name, units in sets.items():
        for dtype, candidate in candidates.items():
            rows[dtype][name] = score(candidate, units)
        print(f"{name:28s} exact fp32 {rows['fp32'][name]['exact']:.4f} fp16 {rows['fp16'][name]['exact']:.4f} "
              f"σ=0.2 {rows['fp16'][name]['exact_sigma_0.2']:.4f}", flush=True)
    cost = max(rows["fp32"][n]["exact"] - rows["fp16"][n]["exact"] for n in sets)
    dtype = "fp16" if cost <= FP16_TOLERANCE else "fp32"
    save_codec(codec, SHIPPED_CODEC, torch.float16 if dtype == "fp16" else torch.float32)
    pins = pin_files(SHIPPED_CODEC, ["config.json", "model.safetensors"])
    write_pins(REPO / "bridges" / "pretrained" / "__init__.py", pins)

    shipped = rows[dtype]
    locales = [n for n in shipped if n.startswith("parallel/")]
    summary = {"en/valid": shipped["en/valid"]["exact"], "multilingual/valid": shipped["multilingual/valid"]["exact"],
               "parallel/valid mean over locales": sum(shipped[n]["exact"] for n in locales) / len(locales),
               "en/valid σ=0.2 / clean": shipped["en/valid"]["exact_sigma_0.2"] / shipped["en/valid"]["exact"]}
    report = {"export": str(args.export), "dtype": dtype, "fp16_cost_exact": cost,
              "params": sum(p.numel() for p in codec.parameters()),
              "config": {"concept_dim": codec.concept_dim, **vars(codec.config)}, "summary": summary, "sets": shipped,
              "fp32": rows["fp32"], "pinned": pins, "machine": f"{platform.node()} {platform.platform()}",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out = REPO / "benchmarks" / "results" / "shipped-codec"
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(shipped)
    out.with_suffix(".md").write_text("\n".join(f"- {k}: {v:.4f}" for k, v in summary.items()) + "\n\n" + table + "\n")
    print(table)
    print(f"shipped {SHIPPED_CODEC.relative_to(REPO)} ({dtype}; fp16 cost {cost:.4f} exact), report {out}.json/.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    t = commands.add_parser("train", help="build the corpus, prepare it and train the codec")
    t.add_argument("--max-time", default="00:01:40:00", help="the run's wall-clock budget, DD:HH:MM:SS")
    t.add_argument("--decay-steps", type=int, default=40000, help="the cosine schedule's length in steps")
    t.add_argument("--resume", action="store_true", help="go on from runs/ship-codec/run/checkpoints/last.ckpt")
    t.add_argument("extra", nargs="*", help="more blcm fit arguments (after --)")
    t.set_defaults(run=cmd_train)
    p = commands.add_parser("package", help="measure the trained codec and ship its weights")
    p.add_argument("--export", type=Path, default=RUN / "export", help="the trained ByteLCM export")
    p.add_argument("--units", type=int, default=100_000,
                   help="at most this many units scored per held-out set, a seeded sample (default: all)")
    p.set_defaults(run=cmd_package)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
