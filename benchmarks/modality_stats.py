"""Entropy and patch statistics per modality: how an entropy model sees text, speech and image bytes.

Every input document is sniffed from its content (bridges.modality) and cut to its first
``--max-bytes``; per modality: bits per byte of the model's next-byte predictions, mean entropy, and
the mean patch size of entropy patching (a) at one global threshold calibrated on the text documents
to ``--target-patch-size`` and (b) at a threshold calibrated on that modality alone. Prints a table
and writes benchmarks/out/modality_stats.json.

    python benchmarks/modality_stats.py ../shared/data/bytes ../shared/data/en/valid.jsonl.gz \\
        --model runs/entropy-tiny-en/export --docs 12 --max-bytes 16384
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from blcm.data.documents import iter_records
from blt.entropy import EntropyModel
from blt.ids import pad_batch
from blt.patching import Patcher
from bridges.modality import sniff


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="files, folders or JSONL(.gz) of any bytes")
    parser.add_argument("--model", required=True, help="an exported entropy model")
    parser.add_argument("--docs", type=int, default=12, help="documents per modality (the first in file order)")
    parser.add_argument("--max-bytes", type=int, default=16384, help="bytes kept per document")
    parser.add_argument("--target-patch-size", type=float, default=4.5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", default="benchmarks/out/modality_stats.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = EntropyModel.from_pretrained(args.model)

    by_modality: dict[str, list[bytes]] = defaultdict(list)
    for doc in iter_records(args.inputs):
        kind = sniff(doc.data)
        if doc.data and len(by_modality[kind]) < args.docs:
            by_modality[kind].append(doc.data[: args.max_bytes])
    if "text" not in by_modality:
        raise SystemExit("no text documents among the inputs: the global threshold is calibrated on text")

    scored = {}
    for kind, docs in sorted(by_modality.items()):
        ids, lengths = pad_batch(docs)
        scored[kind] = (ids, lengths, model.entropies(ids, lengths), model.log_probs(ids, lengths))
    patcher = Patcher(mode="entropy")
    text_ids, text_lengths, text_h, _ = scored["text"]
    global_threshold = patcher.calibrate(text_ids, text_lengths, text_h, args.target_patch_size, clamp=True)

    rows = {}
    for kind, (ids, lengths, h, logp) in scored.items():
        n = int(lengths.sum())
        own = patcher.calibrate(ids, lengths, h, args.target_patch_size, clamp=True)
        rows[kind] = {"docs": len(lengths), "bytes": n, "bits_per_byte": float(-logp.sum() / n / math.log(2)),
                      "mean_entropy_nats": float(h.sum() / n),
                      "patch_size_at_text_threshold": n / int(patcher(ids, lengths, h, global_threshold).counts.sum()),
                      "own_threshold": own}
    print(f"{model.num_params():,}-parameter entropy model {args.model}; text threshold {global_threshold:.3f} nats "
          f"(mean patch {args.target_patch_size} bytes on text)")
    print(f"{'modality':<9} {'docs':>5} {'bytes':>9} {'bits/byte':>9} {'mean H':>7} {'patch @text thr':>15} "
          f"{'own thr':>8}")
    for kind, r in rows.items():
        print(f"{kind:<9} {r['docs']:>5} {r['bytes']:>9,} {r['bits_per_byte']:>9.3f} {r['mean_entropy_nats']:>7.3f} "
              f"{r['patch_size_at_text_threshold']:>15.2f} {r['own_threshold']:>8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "inputs": args.inputs, "text_threshold": global_threshold,
                               "settings": vars(args), "modalities": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
