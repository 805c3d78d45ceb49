"""Encode and decode throughput: the shipped chunk codec (every byte in one pass) against the autoregressive
byte codec it replaced (configs/codec-tiny.yaml's: a byte encoder and a causal byte decoder with a KV cache).

Both codecs get the same units (en/valid sentences when ../shared is present, else examples/sample.txt's
repeated). The autoregressive decoder is timed at its best case: units sorted by length and batched, each batch
generating exactly as many steps as its longest unit (a trained decoder cannot stop before that; untrained
weights would never emit the end). Weights do not change the cost of either codec, so the autoregressive one
is built untrained. Each timing is repeated; the table shows min and median units/s.

    python benchmarks/codec_speed.py --threads 1 --out benchmarks/results/codec-speed
    python benchmarks/codec_speed.py --chunk-codec runs/ship-codec/export   # a trained candidate beside the shipped
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blcm.data.prepare import make_segmenter  # noqa: E402
from blcm.lightning import ByteLCMModule  # noqa: E402
from blcm.lightning.config import instantiate  # noqa: E402
from bridges.pretrained import load_codec  # noqa: E402

SHARED_VALID = REPO.parent / "shared" / "data" / "en" / "valid.jsonl.gz"


def sample_units(n: int, source: Path | None = None) -> tuple[list[bytes], str]:
    """``n`` sentence units of at most 128 bytes (the first ones of ``source``, repeated if it is short; by
    default en/valid, else examples/sample.txt), and where they came from."""
    from blcm.data.documents import iter_documents

    segment = make_segmenter("sentence", 128).split
    if source is None:
        source = SHARED_VALID if SHARED_VALID.is_file() else REPO / "examples" / "sample.txt"
    units: list[bytes] = []
    for doc in iter_documents([str(source)]):
        units += segment(doc)
        if len(units) >= n:
            break
    if not units:
        raise SystemExit(f"{source}: no units")
    units = (units * -(-n // len(units)))[:n]
    return units, str(source.relative_to(REPO.parent) if source == SHARED_VALID else
                      source.relative_to(REPO) if source.is_relative_to(REPO) else source)


def autoregressive_codec():
    init = yaml.safe_load((REPO / "configs" / "codec-tiny.yaml").read_text())["model"]["init_args"]
    torch.manual_seed(0)
    return instantiate(ByteLCMModule, {**init, "init_entropy_from": None, "export_dir": None}).model.codec.eval()


def length_batches(units: list[bytes], batch_size: int) -> list[list[bytes]]:
    ordered = sorted(units, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@torch.inference_mode()
def measure(units: list[bytes], batch_size: int, repeats: int, others: list[Path] = ()) -> list[dict]:
    codecs = {"chunk (shipped)": load_codec(), **{f"chunk ({p})": load_codec(p) for p in others},
              "autoregressive (codec-tiny)": autoregressive_codec()}
    batches = length_batches(units, batch_size)
    rows = []
    for name, codec in codecs.items():
        concepts = [codec.encode(b) for b in batches]

        def encode(codec=codec):
            for b in batches:
                codec.encode(b)

        if name.startswith("chunk"):
            def decode(codec=codec, concepts=concepts):
                for c in concepts:
                    codec.decode(c)
        else:
            def decode(codec=codec, concepts=concepts):
                for b, c in zip(batches, concepts, strict=True):
                    codec.decoder.generate(c, max_bytes=max(map(len, b)))

        params = sum(p.numel() for p in codec.parameters())
        for op, fn in (("encode", encode), ("decode", decode)):
            times = timed(fn, repeats)
            median = len(units) / statistics.median(times)
            rows.append({"codec": name, "op": op, "params": params, "units": len(units),
                         "units_per_s_min": len(units) / max(times), "units_per_s_median": median, "seconds": times})
            print(f"{name:28s} {op}: {median:,.0f} units/s (median)", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| codec | op | params | units/s (median) | units/s (slowest run) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['codec']} | {r['op']} | {r['params']:,} | {r['units_per_s_median']:,.0f} | "
              f"{r['units_per_s_min']:,.0f} |" for r in rows]
    ratio = {op: next(r for r in rows if r["op"] == op and r["codec"].startswith("chunk"))["units_per_s_median"]
             / next(r for r in rows if r["op"] == op and r["codec"].startswith("auto"))["units_per_s_median"]
             for op in ("encode", "decode")}
    lines.append(f"\nchunk / autoregressive (medians): encode {ratio['encode']:.1f}x, decode {ratio['decode']:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=512, help="units timed (default 512)")
    parser.add_argument("--input", type=Path, help="a text or JSONL(.gz) file whose sentences are timed (default "
                        "../shared/data/en/valid.jsonl.gz if present, else examples/sample.txt)")
    parser.add_argument("--batch-size", type=int, default=128, help="units a batch (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--chunk-codec", type=Path, action="append", default=[],
                        help="also time this exported chunk codec (tools/ship_codec.py's runs/<name>/export); "
                        "repeatable")
    parser.add_argument("--out", default="benchmarks/results/codec-speed", help="prefix of the .md and .json written")
    args = parser.parse_args()
    if min(args.units, args.batch_size, args.repeats, args.threads) < 1:
        parser.error("--units, --batch-size, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    if args.input is not None and not args.input.is_file():
        parser.error(f"--input {args.input} is not a file")
    units, source = sample_units(args.units, args.input)
    if missing := [p for p in args.chunk_codec if not (p / "config.json").is_file()]:
        parser.error(f"--chunk-codec {missing[0]} is not a codec export (no config.json)")
    rows = measure(units, args.batch_size, args.repeats, args.chunk_codec)
    table = markdown(rows)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "input": args.input and str(args.input), "chunk_codec": list(map(str, args.chunk_codec)),
                "source": source,
                "mean_unit_bytes": sum(map(len, units)) / len(units), "machine": platform.platform(),
                "torch": torch.__version__}
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
    main()
