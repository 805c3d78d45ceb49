"""The `blcm eval` report: the result as strict JSON, as markdown (a summary table with a column per group, then
reconstruction, cross-lingual, retrieval, speed and generation examples) and as TensorBoard scalars."""

from __future__ import annotations

import math
from collections.abc import Sequence

from blcm.eval.text import unit_text


def json_ready(value):
    """The result with NaN (an undefined metric) as None, so it is strict JSON (null)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


SUMMARY = (  # (label, section, path inside a group)
    ("exact match (σ=0)", "reconstruction", ("sigma=0", "all", "exact")),
    ("byte accuracy (σ=0)", "reconstruction", ("sigma=0", "all", "byte_accuracy")),
    ("chrF (σ=0)", "reconstruction", ("sigma=0", "all", "chrf")),
    ("chrF (σ=0.5)", "reconstruction", ("sigma=0.5", "all", "chrf")),
    ("next-unit bits/byte", "next_unit_bpb", ("bpb",)),
    ("byte LM next-unit bits/byte", "byte_lm_next_unit_bpb", ("bpb",)),
    ("l2", "prediction", ("l2",)),
    ("round-trip l2", "prediction", ("round_trip_l2",)),
    ("copy-last l2", "prediction", ("copy_l2",)),
    ("mean-concept l2", "prediction", ("mean_l2",)),
    ("CA", "prediction", ("ca",)),
    ("copy-last CA", "prediction", ("copy_ca",)),
    ("PAR", "prediction", ("par",)),
    ("MI (nats/byte)", "prediction", ("mi",)),
    ("entropy-model bits/byte", "patching", ("bpb",)),
    ("mean patch bytes", "patching", ("patch_bytes",)),
    ("ROUGE-L", "generation", ("rouge_l",)),
    ("ROUGE-L vs another prompt's truth", "generation", ("rouge_l_other",)),
    ("prompt-relevance gap (ROUGE-L)", "generation", ("relevance_gap",)),
    ("ROUGE-L vs another prompt's continuation", "generation", ("rouge_l_alike",)),
    ("the same, between true continuations", "generation", ("reference_rouge_l_alike",)),
    ("generated words in the vocabulary", "generation", ("in_vocabulary",)),
    ("valid UTF-8 continuations", "generation", ("utf8",)),
    ("byte-LM bits/byte of the continuation", "generation", ("byte_lm_bpb",)),
    ("byte-LM bits/byte of the true continuation", "generation", ("reference_byte_lm_bpb",)),
    ("true words in the vocabulary", "generation", ("reference_in_vocabulary",)),
    ("REP-4", "generation", ("rep4",)),
    ("OVL-3", "generation", ("ovl3",)),
    ("REP-4 of the true text", "generation", ("reference_rep4",)),
    ("OVL-3 of the true text", "generation", ("reference_ovl3",)),
)


def lookup(tree: dict, path: Sequence[str]):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_rows(result: dict) -> tuple[list[str], list[list]]:
    """The headline metrics, one row each, with a column per group (overall first, then each source)."""
    groups = ["overall", *result["data"]["sources"]]
    rows = []
    for label, section, path in SUMMARY:
        values = [lookup(result.get(section) or {}, (g, *path)) for g in groups]
        if any(v is not None for v in values):
            rows.append([label, *values])
    return ["metric", *groups], rows


def render_markdown(result: dict) -> str:
    data, model = result["data"], result["model"]
    params = sum(model["parameters"].values())
    parts = [f"# blcm eval: {model['type']} ({params:,} parameters)",
             f"{data['documents']} documents, {data['units']} units, {data['bytes']:,} bytes "
             f"(first {result['settings']['window']} units of each).", table(*summary_rows(result))]
    recon = lookup(result, ("reconstruction", "overall"))
    if recon:
        rows = [[sigma.removeprefix("sigma="), bucket, m["units"], m["exact"], m["byte_accuracy"], m["chrf"]]
                for sigma, buckets in recon.items() for bucket, m in buckets.items()]
        parts += ["## Reconstruction (overall)", table(["σ", "unit bytes", "units", "exact", "byte acc", "chrF"], rows)]
    if result.get("crosslingual"):
        rows = [[locale if locale != "pool" else "chance", m["pairs"], m["xsim_error"]]
                for locale, m in result["crosslingual"].items()]
        parts += ["## Cross-lingual xsim error (nearest of all English paragraphs)",
                  table(["locale", "pairs (chance: pool size)", "xsim error"], rows)]
    if result.get("retrieval"):
        rows = [[split, m["pairs"], m["a_to_b"], m["b_to_a"], m["chance"], m["a_to_b_mean_rank"],
                 m["b_to_a_mean_rank"], m["chance_mean_rank"]] for split, m in result["retrieval"].items()]
        parts += ["## Retrieval between paired files and their transcripts (mean unit concepts, centred)",
                  table(["pairs", "n", "top-1 file → text", "top-1 text → file", "chance", "mean rank file → text",
                         "mean rank text → file", "chance"], rows)]
    if result.get("speed"):
        parts += ["## Speed", table(["measure", "value"], [[k, v] for k, v in result["speed"].items()])]
    examples = lookup(result, ("generation", "examples")) or []
    if examples:
        parts.append("## Generation examples")
        for ex in examples:
            parts.append(table(["prompt (end)", "generated", "true"],
                               [[unit_text(text, 300, cell=True) for text in
                                 (ex["prompt"][-160:], ex["generated"], ex["reference"])]]))
    return "\n\n".join(parts) + "\n"


def log_tensorboard(result: dict, log_dir: str, step: int = 0) -> None:
    """Every number of the summary table as eval/<section>/<metric>/<group>, and the markdown report as text."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir)
    for group in ["overall", *result["data"]["sources"]]:
        for _, section, path in SUMMARY:  # e.g. eval/reconstruction/sigma=0/all/exact/overall
            value = lookup(result.get(section) or {}, (group, *path))
            if isinstance(value, int | float) and not math.isnan(value):
                writer.add_scalar(f"eval/{section}/{'/'.join(path)}/{group}", value, step)
    for locale, m in (result.get("crosslingual") or {}).items():
        writer.add_scalar(f"eval/xsim_error/{locale}", m["xsim_error"], step)
    for split, m in (result.get("retrieval") or {}).items():
        writer.add_scalar(f"eval/retrieval/{split}/file_to_text", m["a_to_b"], step)
        writer.add_scalar(f"eval/retrieval/{split}/text_to_file", m["b_to_a"], step)
    writer.add_text("eval/report", render_markdown(result), step)
    writer.close()
