"""Per modality: the patches an exported ByteLCM's encoder cuts, what they cost, and how well the units come back.

For held-out units of each modality (en/valid sentences; the WAV and PNG files of the shared corpus's 10%
held-out split, in the model's own units), each model gets: the mean patch size, the encoder's forward
FLOPs per byte (its entropy model included) and one reconstruction training step's FLOPs per byte
(torch's FlopCounterMode), and the decoder's teacher-forced byte accuracy, bits per byte and greedy
exact match on clean concepts. Every unit is encoded as its document's modality.

    .venv/bin/python benchmarks/modality_patches.py --model before=runs/mm-before/export \\
        --model after=runs/mm-after/export [--units 256] [--out benchmarks/results/modality-patches.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blcm.data.corpus import in_valid_split  # noqa: E402
from blcm.data.documents import iter_records  # noqa: E402
from blcm.eval.codec import codec_scores, training_flops_per_byte  # noqa: E402
from blcm.model import ByteLCM  # noqa: E402
from blt.ids import pad_batch  # noqa: E402
from bridges.modality import modality_index  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
FOLDERS = {"wav": Path("bytes") / "speech-en", "png": Path("bytes") / "images"}  # under --data


def held_out_documents(modality: str, data: Path = SHARED) -> list[bytes]:
    if modality == "text":
        return [d.data for d in iter_records([str(data / "en" / "valid.jsonl.gz")])]
    files = sorted((data / FOLDERS[modality]).glob(f"*.{modality}"))
    return [p.read_bytes() for p in files if in_valid_split(p.name, 10)]


def sample_units(model: ByteLCM, docs: list[bytes], n: int, seed: int = 0) -> list[bytes]:
    """``n`` units drawn uniformly (seeded) from all the documents' units: a file's start (a WAV's header and
    leading silence) weighs no more than its middle."""
    units = [u for d in docs for u in model.units(d)]
    picked = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return [units[i] for i in sorted(picked)]


def patch_stats(model: ByteLCM, units: list[bytes], modality: str) -> dict[str, float]:
    codec = model.codec
    ids, lengths = pad_batch(units)
    modalities = torch.full_like(lengths, modality_index(modality))
    with torch.no_grad():
        patches = codec.encoder.patches(ids, lengths, modalities)
    with FlopCounterMode(display=False) as counter:  # not under no_grad: its module tracker needs autograd
        codec.concepts(ids, lengths, modalities)
    return {"mean_patch_bytes": float(lengths.sum()) / int(patches.counts.sum()),
            "encoder_mflops_per_byte": counter.get_total_flops() / float(lengths.sum()) / 1e6,
            "train_mflops_per_byte": training_flops_per_byte(codec, units[:64], modality) / 1e6}


COLUMNS = [("mean_patch_bytes", "bytes/patch", "{:.2f}"), ("encoder_mflops_per_byte", "enc MFLOP/B", "{:.2f}"),
           ("train_mflops_per_byte", "train MFLOP/B", "{:.2f}"), ("teacher_forced_byte_accuracy", "byte acc", "{:.3f}"),
           ("bpb", "bpb", "{:.3f}"), ("exact", "exact", "{:.3f}")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="an exported ByteLCM")
    p.add_argument("--units", type=int, default=256, help="held-out units per modality (default 256)")
    p.add_argument("--modalities", nargs="+", default=["text", "wav", "png"], choices=["text", "wav", "png"],
                   help="the modalities measured (default: all three)")
    p.add_argument("--data", type=Path, default=SHARED, help="the folder holding en/valid.jsonl.gz, "
                   "bytes/speech-en/*.wav and bytes/images/*.png (default ../shared/data)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "modality-patches.json")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"{args.data} is missing: the held-out files come from the shared corpora (see --data)")
    torch.manual_seed(0)
    docs = {m: held_out_documents(m, args.data) for m in args.modalities}
    if empty := [m for m, found in docs.items() if not found]:
        sys.exit(f"{args.data}: no held-out documents of {', '.join(empty)}")
    rows = []
    for spec in args.model:
        name, _, directory = spec.partition("=")
        model = ByteLCM.from_pretrained(directory)
        for modality in args.modalities:
            units = sample_units(model, docs[modality], args.units)
            scores = codec_scores(model.codec, units, sigmas=(), modality=modality)
            rows.append({"model": name, "export": directory, "modality": modality, "units": len(units),
                         **patch_stats(model, units, modality),
                         **{k: scores[k] for k in ("teacher_forced_byte_accuracy", "bpb", "exact")}})
            print(f"{name:10s} {modality:5s} " + "  ".join(f"{label} {fmt.format(rows[-1][key])}"
                                                          for key, label, fmt in COLUMNS), flush=True)
    print("\n| model | modality | units | " + " | ".join(label for _, label, _ in COLUMNS) + " |")
    print("|---|---|---:|" + "---:|" * len(COLUMNS))
    for r in rows:
        print(f"| {r['model']} | {r['modality']} | {r['units']} | "
              + " | ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "machine": platform.platform(), "command": sys.argv,
                                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
