"""Metric-vs-minutes curves of a training run, from the ``metrics.jsonl`` that MetricsHistory writes.

Prints a markdown table (one row per validation) and saves a figure and the rows as JSON.

    python benchmarks/curve.py runs/tiny-en/version_0/metrics.jsonl --out benchmarks/out/tiny-en-curve
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [("val/bpb", "decoder bpb"), ("val/exact_le128", "exact ≤128 B"), ("val/exact", "exact"),
           ("val/l2", "core l2"), ("val/copy_last_l2", "copy-last l2"), ("val/ca", "core CA"),
           ("val/copy_last_ca", "copy-last CA"), ("val/core_loss", "core loss"), ("val/entropy_bpb", "entropy bpb")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="a metrics.jsonl written by blcm.callbacks.MetricsHistory")
    parser.add_argument("--out", default="benchmarks/out/curve", help="prefix of the .png and .json written")
    args = parser.parse_args()
    path = Path(args.metrics)
    if not path.is_file():
        parser.error(f"{path}: no such file")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        parser.error(f"{path} has no validation records yet")
    columns = [(key, name) for key, name in COLUMNS if any(key in r for r in rows)]

    print("| step | train minutes | " + " | ".join(name for _, name in columns) + " |")
    print("|---:|---:|" + "---:|" * len(columns))
    for r in rows:
        cells = [f"{r[key]:.3f}" if key in r else "" for key, _ in columns]
        print(f"| {r['step']} | {r['minutes']:.1f} | " + " | ".join(cells) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val/bpb", "val/entropy_bpb"), ("val/exact_le128",), ("val/l2", "val/copy_last_l2"),
              ("val/ca", "val/copy_last_ca")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), dpi=100)
    for ax, keys in zip(axes, panels, strict=True):
        for key in keys:
            points = [(r["minutes"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=dict(COLUMNS).get(key, key))
        ax.set_xlabel("training minutes")
        ax.legend(fontsize=8)
    fig.suptitle(str(path), fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
