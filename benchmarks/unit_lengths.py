"""Unit lengths of the SentenceSegmenter on the shared corpora, per corpus and per source.

The byte encoder and decoder work on one unit at a time with a fixed byte budget, so the length
distribution decides how much of a batch is padding and how often a sentence is cut by the cap.
For each corpus, each group of documents (all, then each ``source``; with ``--by-lang`` also each
language) and each cap, it reports: units, mean / p50 / p90 / p99 bytes per unit, the share of
units cut at the cap (length == max_bytes), the share that fit in 128 bytes, the share of
sentences (before the cap) longer than the cap, i.e. re-split at a clause break, a space or a hard
cut, and the segmenter's throughput.

Corpora (gzip JSONL, read with gzip + json): en/valid, the first --max-docs documents of
en/train, multilingual/valid, parallel/valid (each language field of a record, ``en`` and locale
keys like ``fr-FR``, is a document of its own).

Prints a markdown table per cap and writes JSON. Nothing is asserted: a measuring tool.

    .venv/bin/python benchmarks/unit_lengths.py --help
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import re
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from blcm.data.documents import read_jsonl
from bridges.segment import SentenceSegmenter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "unit_lengths.json"
LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")  # parallel records: "en", "fr-FR", "zh-CN", ...


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Prints markdown tables and writes JSON.",
                                epilog="Default paths are relative to the repository root.")
    p.add_argument("--data", type=Path, default=DATA, help="folder holding en/, multilingual/, parallel/ "
                   "(default ../shared/data)")
    p.add_argument("--max-docs", type=int, default=3000,
                   help="documents read from en/train.jsonl.gz, the first ones; 0 for all (default %(default)s)")
    p.add_argument("--max-bytes", type=int, nargs="+", default=[256, 128],
                   help="SentenceSegmenter caps to measure (default %(default)s)")
    p.add_argument("--by-lang", action="store_true",
                   help="also report each language (the `lang` field, or the locale key of parallel records)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"JSON output path, directories are created (default {DEFAULT_OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    if args.max_docs < 0:
        p.error("--max-docs must be >= 0")
    if any(m < 4 for m in args.max_bytes):
        p.error("--max-bytes must be >= 4")
    if not args.data.is_dir():
        p.error(f"--data {args.data} is not a directory")
    return args


# ---------------------------------------------------------------------------------------------
# Corpora: each a list of (document bytes, source, language)


def read_records(path: Path, max_docs: int = 0) -> list[dict]:
    """The first ``max_docs`` records of a JSONL(.gz) file (0: all), through the project's one reader."""
    records = (record for _, record in read_jsonl(path))
    return list(itertools.islice(records, max_docs or None))


def load_corpora(data: Path, max_docs: int) -> dict[str, list[tuple[bytes, str, str]]]:
    corpora = {}
    for name, path, limit in [("en/valid", data / "en" / "valid.jsonl.gz", 0),
                              ("en/train", data / "en" / "train.jsonl.gz", max_docs),
                              ("multilingual/valid", data / "multilingual" / "valid.jsonl.gz", 0)]:
        if path.is_file():
            corpora[name] = [(r["text"].encode(), r.get("source", "?"), r.get("lang", "?"))
                             for r in read_records(path, limit)]
        else:
            print(f"skipping {name}: {path} not found", file=sys.stderr)
    path = data / "parallel" / "valid.jsonl.gz"
    if path.is_file():
        corpora["parallel/valid"] = [(text.encode(), r.get("source", "?"), key)
                                     for r in read_records(path) for key, text in r.items()
                                     if LOCALE.match(key) and isinstance(text, str) and text]
    else:
        print(f"skipping parallel/valid: {path} not found", file=sys.stderr)
    return corpora


# ---------------------------------------------------------------------------------------------
# Measurement


def stats(lengths: np.ndarray, sentences: np.ndarray, max_bytes: int) -> dict:
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99]) if len(lengths) else (0, 0, 0)
    return {"units": len(lengths), "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "capped": float((lengths == max_bytes).mean()) if len(lengths) else 0.0,
            "le_128": float((lengths <= 128).mean()) if len(lengths) else 0.0,
            "sentences": len(sentences),
            "over_cap": float((sentences > max_bytes).mean()) if len(sentences) else 0.0}


def measure(corpora: dict, max_bytes: int, by_lang: bool) -> list[dict]:
    seg, uncapped = SentenceSegmenter(max_bytes), SentenceSegmenter(1 << 62)
    rows = []
    for name, docs in corpora.items():
        groups: dict[str, list[np.ndarray]] = defaultdict(list)
        sentence_groups: dict[str, list[np.ndarray]] = defaultdict(list)
        sizes: dict[str, int] = defaultdict(int)
        t = time.perf_counter()
        per_doc = [np.fromiter(map(len, seg.split(doc)), dtype=np.int64) for doc, _, _ in docs]
        seconds = time.perf_counter() - t
        sentences = [np.fromiter(map(len, uncapped.split(doc)), dtype=np.int64) for doc, _, _ in docs]
        for (doc, source, lang), lengths, sents in zip(docs, per_doc, sentences, strict=True):
            keys = ["all", f"source={source}"] + ([f"lang={lang}"] if by_lang else [])
            for key in keys:
                groups[key].append(lengths)
                sentence_groups[key].append(sents)
                sizes[key] += len(doc)
        for key, parts in groups.items():
            if key.startswith("source=") and len({s for _, s, _ in docs}) == 1:
                continue  # one source: the same numbers as "all"
            row = {"corpus": name, "group": key, "max_bytes": max_bytes, "docs": len(parts), "bytes": sizes[key],
                   **stats(np.concatenate(parts), np.concatenate(sentence_groups[key]), max_bytes)}
            if key == "all":
                row["seconds"] = seconds
                row["mb_per_s"] = sizes[key] / 1e6 / seconds
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = "| corpus | group | docs | MB | units | mean | p50 | p90 | p99 | capped | ≤128 B | sent > cap | MB/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        speed = f"{r['mb_per_s']:.1f}" if "mb_per_s" in r else ""
        lines.append(f"| {r['corpus']} | {r['group']} | {r['docs']} | {r['bytes'] / 1e6:.2f} | {r['units']} | "
                     f"{r['mean']:.1f} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p99']:.0f} | "
                     f"{100 * r['capped']:.1f}% | {100 * r['le_128']:.1f}% | {100 * r['over_cap']:.1f}% | {speed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpora = load_corpora(args.data, args.max_docs)
    if not corpora:
        print(f"no corpus found under {args.data}", file=sys.stderr)
        return 1
    results = []
    for max_bytes in args.max_bytes:
        rows = measure(corpora, max_bytes, args.by_lang)
        results.extend(rows)
        print(f"\nSentenceSegmenter(max_bytes={max_bytes})\n")
        print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "unit_lengths", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "args": {"data": str(args.data), "max_docs": args.max_docs, "max_bytes": args.max_bytes,
                       "by_lang": args.by_lang},
              "rows": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
