"""The codec's learning curve: how well concepts carry their units against training minutes.

Reads the snapshots a run wrote (``blcm.callbacks.Snapshots``: an export every few training minutes under
``<run>/snapshots/``) and scores each on one fixed sample of held-out units (blcm.eval.codec): greedy
exact match clean and under concept noise σ, teacher-forced byte accuracy, the decoder's bits per byte
given the concept next to the encoder's entropy model (an unconditional byte LM) on the same units,
concept dispersion, the unit bytes per second the run trained on, and (last snapshot) units encoded and
decoded per second. Several runs side by side: one table, one JSON, one PNG.

    blcm fit --config configs/codec-tiny.yaml --data.data_dir runs/prepared/en-128
    python benchmarks/codec_curve.py runs/codec-tiny/version_0 --data runs/prepared/en-128 \\
        --out benchmarks/results/codec-curve
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blcm.data.units import PreparedUnits  # noqa: E402
from blcm.eval.codec import codec_scores, training_flops_per_byte  # noqa: E402
from blcm.model import ByteLCM  # noqa: E402
from blt.entropy import EntropyModel  # noqa: E402

SIGMAS = (0.1, 0.2, 0.5)
COLUMNS = [("minutes", "min", "{:.1f}"), ("step", "step", "{:d}"), ("bytes_per_s", "bytes/s", "{:.0f}"),
           ("exact", "exact", "{:.3f}"), *((f"exact_sigma_{s:g}", f"σ={s:g}", "{:.3f}") for s in SIGMAS),
           ("teacher_forced_byte_accuracy", "byte acc", "{:.3f}"), ("bpb", "bpb given c", "{:.3f}"),
           ("lm_bpb", "LM bpb", "{:.3f}"),
           ("mean_cosine", "mean cos", "{:.3f}"), ("min_dim_variance", "min var", "{:.3f}"),
           ("mflops_per_byte", "train MFLOP/B", "{:.2f}"), ("units_per_s", "round trips/s", "{:.0f}")]


def snapshots(run: Path) -> list[Path]:
    """A run's complete snapshots (an export killed mid-write has no snapshot.json), in training order."""
    found = [p for p in (run / "snapshots").glob("step-*")
             if (p / "snapshot.json").is_file() and (p / "model.safetensors").is_file()]
    return sorted(found, key=lambda p: json.loads((p / "snapshot.json").read_text())["minutes"])


def sample_units(data_dir: str, split: str, n: int, max_bytes: int, seed: int) -> list[bytes]:
    """``n`` distinct units of at most ``max_bytes`` bytes, drawn with a fixed seed (the same for every run)."""
    pool = PreparedUnits(data_dir, split).sample_units(4 * n, seed=seed)
    units = list(dict.fromkeys(u for u in pool if 0 < len(u) <= max_bytes))[:n]
    if len(units) < n:
        raise SystemExit(f"{data_dir} {split}: only {len(units)} distinct units of <= {max_bytes} bytes, asked for {n}")
    return units


def measure(run: Path, units: list[bytes], byte_lm: EntropyModel | None) -> list[dict]:
    rows = []
    for snap in snapshots(run):
        record = json.loads((snap / "snapshot.json").read_text())
        model = ByteLCM.from_pretrained(snap)
        lm = byte_lm if byte_lm is not None else model.codec.entropy_model  # one LM for every run, if given
        scores = codec_scores(model.codec, units, SIGMAS, byte_lm=lm)
        rows.append({"run": str(run), **record, "bytes_per_s": per_second(record), **scores})
        print(f"{run} minutes={record['minutes']:.1f} exact={scores['exact']:.3f} bpb={scores['bpb']:.3f}",
              file=sys.stderr)
    if rows:  # the architecture's cost: the same for every snapshot of a run
        rows[-1]["mflops_per_byte"] = training_flops_per_byte(model.codec, units[:64]) / 1e6
        rows[-1]["units_per_s"] = round_trips_per_second(model.codec, units)
    return rows


@torch.inference_mode()
def round_trips_per_second(codec, units: list[bytes], repeats: int = 3) -> float:
    """Units encoded and greedily decoded per second (the fastest of ``repeats`` passes over the sample)."""
    import time

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        codec.decode(codec.encode(units))
        times.append(time.perf_counter() - start)
    return len(units) / min(times)


def per_second(record: dict) -> float:
    """Unit bytes trained per second of training up to a curve point (NaN at minute 0)."""
    return record["bytes"] / (record["minutes"] * 60) if record["minutes"] > 0 else float("nan")


def naive_rows(path: Path) -> list[dict]:
    """The curve of a benchmarks/naive_codec.py run (its own 512 en/valid units, measured as it trained)."""
    curve = json.loads(path.read_text())["curve"]
    return [{"run": f"naive/{path.stem}", **{k: r[k] for k in ("minutes", "step", "exact", "exact_sigma_0.2", "bpb")},
             "bytes_per_s": per_second(r)} for r in curve]


def markdown(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| run | " + " | ".join(name for _, name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for r in rows:
        cells = [fmt.format(r[key]) if key in r else "" for key, _, fmt in columns]
        lines.append(f"| {Path(r['run']).parent.name}/{Path(r['run']).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_exact, ax_bpb) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        minutes = [r["minutes"] for r in mine]
        name = f"{Path(run).parent.name}/{Path(run).name}"
        line = ax_exact.plot(minutes, [r["exact"] for r in mine], marker=".", label=f"{name} clean")[0]
        ax_exact.plot(minutes, [r["exact_sigma_0.2"] for r in mine], ls="--", color=line.get_color(),
                      label=f"{name} σ=0.2")
        ax_bpb.plot(minutes, [r["bpb"] for r in mine], marker=".", color=line.get_color(), label=f"{name} | concept")
        if all("lm_bpb" in r for r in mine):
            ax_bpb.plot(minutes, [r["lm_bpb"] for r in mine], ls=":", color=line.get_color(), label=f"{name} LM")
    ax_exact.set(xlabel="training minutes", ylabel="greedy exact match", ylim=(0, 1))
    ax_bpb.set(xlabel="training minutes", ylabel="bits per byte")
    for ax in (ax_exact, ax_bpb):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (a TensorBoard version dir holding snapshots/)")
    parser.add_argument("--data", required=True, help="a prepared units directory (blcm prepare) to sample from")
    parser.add_argument("--split", default="valid", help="its split to sample (default: valid)")
    parser.add_argument("--units", type=int, default=512, help="units in the fixed sample (default: 512)")
    parser.add_argument("--max-bytes", type=int, default=128, help="longest unit sampled (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default: 0)")
    parser.add_argument("--byte-lm", help="an exported EntropyModel: the unconditional byte LM of every run "
                        "(default: each codec's own entropy model, if it has one)")
    parser.add_argument("--naive", action="append", default=[], metavar="JSON",
                        help="a benchmarks/naive_codec.py result to draw beside the runs (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", default="benchmarks/results/codec-curve", help="prefix of .md/.json/.png written")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not snapshots(run):
            parser.error(f"{run}: no snapshots (train with blcm.callbacks.Snapshots, as configs/codec-tiny.yaml does)")
    units = sample_units(args.data, args.split, args.units, args.max_bytes, args.seed)
    byte_lm = EntropyModel.from_pretrained(args.byte_lm) if args.byte_lm else None
    rows = [row for run in runs for row in measure(run, units, byte_lm)]
    rows += [row for path in args.naive for row in naive_rows(Path(path))]
    table = markdown(rows)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"data": args.data, "split": args.split, "units": len(units), "max_bytes": args.max_bytes,
                "seed": args.seed, "sigmas": list(SIGMAS)}
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(table + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.md, .json and .png")


if __name__ == "__main__":
    main()
