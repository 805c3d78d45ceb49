"""The tables and figures of benchmarks/meaning_space.py: one space's report, and several spaces side by side."""

from __future__ import annotations

import json
from pathlib import Path

from blcm.eval import lookup, table
from blcm.eval.text import unit_text

# label -> path in the result JSON: the headline rows (the compare table's too); per-locale xsim rows follow them
SUMMARY = (("next-concept R², core", ("predictability", "core", "r2")),
           ("next-concept R², copy last", ("predictability", "copy_last", "r2")),
           ("next-concept R², best blend", ("predictability", "blend", "r2")),
           ("CA, core", ("predictability", "core", "ca")),
           ("CA, copy last", ("predictability", "copy_last", "ca")),
           ("xsim error, mean over locales", ("semantics", "xsim", "mean", "xsim_error")),
           ("xsim error, software messages (held-out catalogue)", ("semantics", "xsim_software", "mean", "xsim_error")),
           ("nearest-neighbour overlap with MiniLM", ("semantics", "minilm_agreement", "overlap")),
           ("bits/byte given the meaning", ("writing", "bpb_meaning")),
           ("bits/byte given the meaning, noised", ("writing", "bpb_noised")),
           ("bits/byte given no meaning", ("writing", "bpb_none")),
           ("bits/byte after the text before, given the meaning", ("writing", "bpb_context_meaning")),
           ("bits/byte after the text before, given no meaning", ("writing", "bpb_context_none")))


def summary(result: dict) -> dict:
    """The headline figures by label (None where a stage was skipped), then the xsim error of each locale."""
    rows = {label: lookup(result, path) for label, path in SUMMARY}
    xsim = lookup(result, ("semantics", "xsim")) or {}
    rows.update({f"xsim error, en ↔ {loc}": m["xsim_error"] for loc, m in xsim.items() if loc not in ("mean", "pool")})
    return rows


def plot(panels: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """One bar chart per panel, side by side (panels with no value left out); a bar label has one colour in all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {k: kept for k, bars in panels.items() if (kept := {b: v for b, v in bars.items() if v is not None})}
    labels = dict.fromkeys(b for bars in panels.values() for b in bars)
    colour = {b: f"C{i % 10}" for i, b in enumerate(labels)}
    cols, rows = min(len(panels), 4), -(-len(panels) // 4)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, bars) in zip(axes.flat, panels.items(), strict=False):
        ax.bar(range(len(bars)), list(bars.values()), color=[colour[b] for b in bars])
        ax.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=8)
        ax.bar_label(ax.containers[0], fmt="%.3g", fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, result: dict, markdown: str, panels: dict, title: str) -> None:
    """``out`` (JSON), the markdown beside it, and the panels' figure beside it when they hold any value."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    written = [out, out.with_suffix(".md")]
    if any(v is not None for bars in panels.values() for v in bars.values()):
        plot(panels, out.with_suffix(".png"), title)
        written.append(out.with_suffix(".png"))
    print(markdown)
    print("wrote " + ", ".join(map(str, written)))


def compare(paths: list[str], out: Path) -> None:
    """Several runs' summaries side by side: a row per metric any of them has, a column per space."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    names = [r["name"] for r in results]
    columns = {n if names.count(n) == 1 else f"{n} ({Path(p).stem})": r for n, r, p in zip(names, results, paths,
                                                                                         strict=True)}
    sums = {name: summary(r) for name, r in columns.items()}
    labels = list(dict.fromkeys(label for s in sums.values() for label in s))
    labels = [label for label in labels if any(s.get(label) is not None for s in sums.values())]
    markdown = table(["metric", *columns], [[label, *(sums[n].get(label) for n in columns)] for label in labels])
    panels = {label: {n: sums[n].get(label) for n in columns} for label, _ in SUMMARY}
    write(out, {"runs": dict(zip(columns, paths, strict=True)), "table": {n: sums[n] for n in columns}},
          markdown, panels, "concept spaces")


def report(result: dict) -> tuple[str, dict]:
    """One space's markdown (its summary, what was skipped, the rewrites, the seconds) and its figure's panels."""
    rows = summary(result)
    lines = [f"## {result['name']} ({result['space']})", "",
             table(["metric", "value"], [[k, v] for k, v in rows.items() if v is not None])]
    for stage, why in result["skipped"].items():
        lines.append(f"\n{stage}: skipped ({why})")
    if note := lookup(result, ("semantics", "minilm_agreement", "skipped")):
        lines.append(f"\nagreement with MiniLM: skipped ({note})")
    if examples := lookup(result, ("writing", "examples")):
        lines += ["", "### Rewrites (temperature 0.7)", "",
                  table(["original", "rewrite"], [[unit_text(e["original"], cell=True),
                                                  unit_text(e["rewrite"], cell=True)] for e in examples])]
    lines.append("\nseconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    pred = result.get("predictability") or {}
    panels = {"next-concept R²": {k: lookup(pred, (k, "r2")) for k in ("core", "copy_last", "blend")},
              "CA": {k: lookup(pred, (k, "ca")) for k in ("core", "copy_last", "blend")},
              "xsim error": {k: m["xsim_error"] for k, m in (lookup(result, ("semantics", "xsim")) or {}).items()
                             if k != "pool"},
              "bits/byte": {k: lookup(result, ("writing", f"bpb_{k}")) for k in ("meaning", "noised", "none")}}
    return "\n".join(lines), panels


# -- the meaning runs' learning curves (tools/ship_meaning.py train's runs/<name>/curve.jsonl) --------------

CURVE_FIGURES = {  # curve.jsonl key -> what the table and plot call it
    "unit_retrieval_error": "unit retrieval error (1,024 parallel/valid pairs)",
    "software_retrieval_error": "retrieval error, held-out software messages",
    "next_accuracy_valid": "next-meaning top-1 (en/valid windows)",
    "bpb_meaning": "bits/byte given the meaning",
    "bpb_none": "bits/byte given none",
    "gain": "bits/byte the meaning saves",
    "bpb_context_meaning": "bits/byte after the text before, given the meaning",
    "bpb_context_none": "bits/byte after the text before, given none",
    "mean_meaning_norm": "norm of the mean meaning (1: all alike)",
}


def held_out_rows(run: Path) -> list[dict]:
    """The evaluation rows of a run's curve.jsonl (the training-loss rows have no retrieval error), each with the
    bits per byte the meaning saves."""
    path = run / "curve.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: give folders that tools/ship_meaning.py train wrote")
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if "unit_retrieval_error" in r]
    return [{**r, "gain": r["bpb_none"] - r["bpb_meaning"]} for r in rows]


def curve_table(curves: dict[str, list[dict]]) -> str:
    header = ["run", "minutes", "step", *CURVE_FIGURES.values()]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, rows in curves.items():
        for r in rows:
            figures = (f"{r[k]:.3f}" if k in r else "–" for k in CURVE_FIGURES)
            cells = [name, f"{r['minutes']:.0f}", str(r["step"]), *figures]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["unit_retrieval_error", "software_retrieval_error", "next_accuracy_valid", "gain", "mean_meaning_norm"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for name, rows in curves.items():
            rows = [r for r in rows if key in r]  # runs older than a figure lack it
            ax.plot([r["minutes"] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.set_title(CURVE_FIGURES[key], fontsize=9)
        ax.set_xlabel("training minutes (one core)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(runs: list[str], out: Path) -> None:
    """Every run's held-out rows as one table (a row per run and evaluation), JSON and markdown, and a figure of
    each held-out figure against training minutes, a line per run."""
    rows = {Path(run).name: held_out_rows(Path(run)) for run in runs}
    markdown = curve_table(rows)
    print(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "curves": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    curve_plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}, its .md and .png")
