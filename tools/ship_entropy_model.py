"""Train and package the entropy model that ships inside byte-lcm (blt/pretrained/entropy-bytes).

    python tools/ship_entropy_model.py train     # blcm fit --config configs/entropy-bytes.yaml on the split below
    python tools/ship_entropy_model.py package   # per-modality thresholds, bits per byte, fp16 weights + SHA-256

The model must be a *byte* model, not an English one, so it trains on every shared corpus
(../shared/data): en/train, multilingual/train, and the WAV and PNG files whose name is not in the
10% held-out split (``blcm.data.corpus.in_valid_split(name, 10)``, the split `blcm prepare --valid-percent 10`
gives the same files). ``package`` then

* stores the weights in the dtype that costs nothing measurable in bits per byte (fp16 vs fp32 is
  measured and written to the report; fp32 is kept if fp16 costs more than 0.005 bpb),
* calibrates one entropy threshold per modality to ``MODALITY_PATCH_SIZES`` on training files,
* scores bits per byte per source (en/valid), on multilingual/valid and on the held-out WAV and PNG
  files, next to configs/entropy-tiny.yaml's model when ``--baseline`` points to its export,
* writes config.json (with the thresholds) and model.safetensors into the package and the weights'
  SHA-256 into blt/pretrained/__init__.py's ``SHA256``, and a report to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blcm.data.corpus import in_valid_split  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
HELD_OUT_PERCENT = 10
BYTE_DIRS = {"wav": SHARED / "bytes" / "speech-en", "png": SHARED / "bytes" / "images"}


def byte_files(modality: str, held_out: bool) -> list[Path]:
    """The WAV or PNG files of the shared corpus on one side of the split."""
    files = sorted(p for p in BYTE_DIRS[modality].iterdir() if p.suffix == f".{modality}")
    return [p for p in files if in_valid_split(p.name, HELD_OUT_PERCENT) == held_out]


def train_files() -> list[str]:
    return [str(SHARED / "en" / "train.jsonl.gz"), str(SHARED / "multilingual" / "train.jsonl.gz"),
            *map(str, byte_files("wav", False) + byte_files("png", False))]


def valid_files() -> list[str]:
    return [str(SHARED / "en" / "valid.jsonl.gz"), str(SHARED / "multilingual" / "valid.jsonl.gz"),
            *map(str, byte_files("wav", True) + byte_files("png", True))]


def cmd_train(args) -> int:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the shipped model trains on the shared corpora")
    command = [sys.executable, "-m", "blcm.cli", "fit", "--config", str(REPO / "configs" / "entropy-bytes.yaml"),
               "--data.train_files", json.dumps(train_files()), "--data.val_files", json.dumps(valid_files()),
               *args.extra]
    print(" ".join(command[:5]), "--data.train_files [...] --data.val_files [...]", *args.extra, flush=True)
    start = time.time()
    code = subprocess.call(command, cwd=REPO)
    print(f"wall time {(time.time() - start) / 60:.1f} min", flush=True)
    return code



MODALITY_PATCH_SIZES = {"text": 4.5, "wav": 4.5, "png": 4.5, "binary": 4.5}
UNIT_BYTES = 128  # units as configs/multimodal-tiny.yaml prepares them
SAMPLE_BYTES = 1 << 19  # bytes per modality the thresholds are calibrated on
FP16_TOLERANCE = 0.005  # bits per byte fp16 weights may cost before fp32 is kept


def documents(paths: list[str | Path]) -> list:
    from blcm.data.documents import iter_records

    return list(iter_records([str(p) for p in paths]))


def sample(docs: list[bytes], budget: int, piece: int, seed: int = 0) -> list[bytes]:
    """Seeded random pieces of at most ``piece`` bytes (documents cut at multiples of it) until ``budget``."""
    import random

    pieces = [d[i : i + piece] for d in docs for i in range(0, len(d), piece)]
    random.Random(seed).shuffle(pieces)
    out, total = [], 0
    for p in pieces:
        if total >= budget:
            break
        out.append(p)
        total += len(p)
    return out


def padded(rows: list[bytes]):
    import torch

    from blt.ids import OFFSET, PAD

    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.frombuffer(bytearray(r), dtype=torch.uint8).long() + OFFSET
    return ids, lengths


def calibrate(model, rows: list[bytes], target: float) -> tuple[float, float]:
    """The ``entropy`` threshold whose mean patch size over ``rows`` is ``target``, and the size it gives."""
    from blt.patching import Patcher

    patcher = Patcher("entropy")
    ids, lengths = padded(rows)
    entropies = model.entropies(ids, lengths)
    threshold = patcher.calibrate(ids, lengths, entropies, target)
    return threshold, float(lengths.sum()) / int(patcher(ids, lengths, entropies, threshold).counts.sum())


def nats_and_bytes(model, docs: list[bytes]) -> tuple[float, float]:
    """The summed next-byte cross-entropy (nats) of [BOS doc EOS]... and the bytes scored (as `blcm validate`)."""
    from torch.utils.data import DataLoader

    from blcm.data.streams import StreamWindows, stream_from_documents

    nats = n_bytes = 0.0
    for batch in DataLoader(StreamWindows(stream_from_documents(docs), model.config.context), batch_size=32):
        n, b = model.nats_and_bytes(batch)
        nats, n_bytes = nats + float(n), n_bytes + float(b)
    return nats, n_bytes


def held_out_sets() -> dict[str, list[bytes]]:
    """What the report scores: en/valid by source, multilingual/valid, the held-out WAV and PNG files."""
    from collections import defaultdict

    sets: dict[str, list[bytes]] = defaultdict(list)
    for doc in documents([SHARED / "en" / "valid.jsonl.gz"]):
        sets[f"en/valid:{doc.source}"].append(doc.data)
    sets["multilingual/valid"] = [d.data for d in documents([SHARED / "multilingual" / "valid.jsonl.gz"])]
    for modality in BYTE_DIRS:
        sets[f"held-out {modality}"] = [p.read_bytes() for p in byte_files(modality, True)]
    return dict(sets)


def calibration_sets() -> dict[str, list[bytes]]:
    """Training-side documents per modality: the thresholds never see the held-out files."""
    text = [d.data for d in documents([SHARED / "en" / "train.jsonl.gz", SHARED / "multilingual" / "train.jsonl.gz"])]
    sets = {"text": text, **{m: [p.read_bytes() for p in byte_files(m, False)] for m in BYTE_DIRS}}
    sets["binary"] = sets["wav"] + sets["png"]  # the fallback for non-text bytes of no known kind
    return sets


def cmd_package(args) -> int:
    import torch

    from blcm.data.prepare import make_segmenter
    from blt.entropy import EntropyModel
    from blt.pretrained import SHIPPED, THRESHOLDS_FILE, ModalityThresholds, pin_files, write_pins
    from primitives.export import save_export

    torch.manual_seed(0)
    model = EntropyModel.from_pretrained(args.export)
    half = EntropyModel.from_pretrained(args.export)
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    baseline = EntropyModel.from_pretrained(args.baseline) if args.baseline else None

    report = {"export": str(args.export), "baseline": str(args.baseline) if args.baseline else None,
              "params": model.num_params(), "bits_per_byte": {}, "machine": platform.platform(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    models = {"fp32": model, "fp16": half, **({"entropy-tiny": baseline} if baseline is not None else {})}
    with torch.inference_mode():
        en = dict.fromkeys(models, (0.0, 0.0))
        for name, docs in held_out_sets().items():
            scores = {k: nats_and_bytes(m, docs) for k, m in models.items()}
            if name.startswith("en/valid:"):
                en = {k: (en[k][0] + n, en[k][1] + b) for k, (n, b) in scores.items()}
            report["bits_per_byte"][name] = {"bytes": sum(map(len, docs)),
                                             **{k: n / b / math.log(2) for k, (n, b) in scores.items()}}
        report["bits_per_byte"]["en/valid"] = {"bytes": int(next(iter(en.values()))[1]),
                                               **{k: n / b / math.log(2) for k, (n, b) in en.items()}}
        for name, row in report["bits_per_byte"].items():
            print(f"{name:40s} " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in row.items()), flush=True)
        cost = max(r["fp16"] - r["fp32"] for r in report["bits_per_byte"].values())
        dtype = torch.float16 if cost <= FP16_TOLERANCE else torch.float32
        report["fp16_cost_bpb"], report["dtype"] = cost, str(dtype)
        shipped = half if dtype == torch.float16 else model

        targets = {**MODALITY_PATCH_SIZES, **dict(args.patch_size)}
        segment = make_segmenter("modality", UNIT_BYTES)
        file_thr, unit_thr, calibration = {}, {}, {}
        for modality, docs in calibration_sets().items():
            target = targets[modality]
            files = sample(docs, SAMPLE_BYTES, piece=4096)  # a piece past its first 256 bytes has full context
            units = [u for d in sample(docs, SAMPLE_BYTES // 4, piece=1 << 16, seed=1) for u in segment.split(d)]
            file_thr[modality], file_size = calibrate(shipped, files, target)
            unit_thr[modality], unit_size = calibrate(shipped, units, target)
            calibration[modality] = {"target": target, "file_threshold": file_thr[modality], "file_size": file_size,
                                     "unit_threshold": unit_thr[modality], "unit_size": unit_size,
                                     "files": len(files), "units": len(units)}
            print(f"{modality:8s} target {target}: file threshold {file_thr[modality]:.4f} ({file_size:.3f}), "
                  f"unit threshold {unit_thr[modality]:.4f} ({unit_size:.3f})", flush=True)
        report["calibration"] = calibration

    state = {k: v.to(dtype) for k, v in shipped.state_dict().items()}
    save_export(SHIPPED, "EntropyModel", {**vars(shipped.config)}, state)
    ModalityThresholds(targets, file_thr, unit_thr, UNIT_BYTES).save(SHIPPED)
    pins = pin_files(SHIPPED, ["config.json", "model.safetensors", THRESHOLDS_FILE])
    module = REPO / "blt" / "pretrained" / "__init__.py"
    write_pins(module, pins)
    report["pinned"] = pins
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {SHIPPED} ({dtype}), pinned in {module.relative_to(REPO)}, report {args.report}")
    return 0

def cmd_one_threshold(args) -> int:
    """A copy of the shipped model whose every modality has the text thresholds: what one threshold for all
    bytes gives (the "before" of benchmarks/modality_patches.py)."""
    import shutil
    from dataclasses import replace

    from blt.pretrained import SHIPPED, load_shipped_entropy_model

    _, thresholds = load_shipped_entropy_model()
    shutil.copytree(SHIPPED, args.out, dirs_exist_ok=True)
    replace(thresholds, file=dict.fromkeys(thresholds.file, thresholds.file["text"]),
            unit=dict.fromkeys(thresholds.unit, thresholds.unit["text"])).save(args.out)
    print(f"wrote {args.out}: the text thresholds for every modality")
    return 0


def modality_size(text: str) -> tuple[str, float]:
    modality, _, size = text.partition("=")
    if modality not in MODALITY_PATCH_SIZES:
        raise argparse.ArgumentTypeError(f"modality must be one of {', '.join(MODALITY_PATCH_SIZES)}, got {modality!r}")
    try:
        value = float(size)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the size after '=' must be a number") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a mean patch size is at least 1 byte")
    return modality, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train configs/entropy-bytes.yaml on the shared corpora")
    t.add_argument("extra", nargs=argparse.REMAINDER, help="more `blcm fit` flags, e.g. --trainer.max_time ...")
    t.set_defaults(run=cmd_train)
    k = sub.add_parser("package", help="thresholds, bits per byte and fp16 weights into blt/pretrained")
    k.add_argument("--export", type=Path, default=REPO / "runs" / "entropy-bytes" / "export",
                   help="the trained model (default: what `train` exported)")
    k.add_argument("--baseline", type=Path, help="an export to score next to it, e.g. runs/entropy-tiny/export")
    k.add_argument("--report", type=Path, default=REPO / "benchmarks" / "results" / "entropy-bytes.json")
    k.add_argument("--patch-size", type=modality_size, action="append", default=[], metavar="MODALITY=SIZE",
                   help=f"a target mean patch size (repeatable); defaults {MODALITY_PATCH_SIZES}")
    k.set_defaults(run=cmd_package)
    o = sub.add_parser("one-threshold", help="a copy of the shipped model with the text thresholds for every modality")
    o.add_argument("out", type=Path, help="the directory to write")
    o.set_defaults(run=cmd_one_threshold)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
