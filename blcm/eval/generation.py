"""Generation: continue documents from their first k units; ROUGE-L against the true next units, REP-4 and
OVL-3 (word n-grams, blcm.text_metrics), and the same for the true text as a reference."""

from __future__ import annotations

import math
from collections.abc import Callable

from blcm.eval.aggregate import by_source, nanmean
from blcm.eval.inputs import EvalDocument
from blcm.eval.progress import Timer
from blcm.eval.settings import EvalSettings
from blcm.text_metrics import overlap, repetition, rouge_l


def generation(generate: Callable[[bytes, bytes], bytes], docs: list[EvalDocument], settings: EvalSettings,
               speed: dict, progress) -> dict:
    """Continue each document from its first k units; ``generate(prompt, true_continuation) -> bytes``."""
    k, m = settings.prompt_units, settings.continuation_units
    chosen = [d for d in docs if len(d.units) > k][: settings.generation_docs]
    rows, generated_bytes, timer = [], 0, Timer()
    for d in progress(chosen, desc="generation (documents)"):
        prompt, reference = b"".join(d.units[:k]), b"".join(d.units[k : k + m])
        with timer:
            continuation = generate(prompt, reference)
        generated_bytes += len(continuation)
        rows.append({"source": d.source, "prompt": prompt, "reference": reference, "generated": continuation})
    if not rows:
        return {}
    speed["generated_bytes_per_s"] = generated_bytes / timer.seconds if timer.seconds else math.nan
    for r, score in zip(rows, rouge_l([r["generated"] for r in rows], [r["reference"] for r in rows]), strict=True):
        r["rouge_l"] = score

    def aggregate(group: list[dict]) -> dict:
        text = [{key: r[key].decode("utf-8", errors="replace") for key in ("prompt", "reference", "generated")}
                for r in group]
        return {"documents": len(group), "rouge_l": nanmean(r["rouge_l"] for r in group),
                "rep4": nanmean(repetition(t["generated"], 4) for t in text),
                "ovl3": nanmean(overlap(t["generated"], t["prompt"], 3) for t in text),
                "reference_rep4": nanmean(repetition(t["reference"], 4) for t in text),
                "reference_ovl3": nanmean(overlap(t["reference"], t["prompt"], 3) for t in text),
                "generated_bytes": sum(len(r["generated"]) for r in group),
                "reference_bytes": sum(len(r["reference"]) for r in group)}

    result = by_source(rows, aggregate)
    result["examples"] = [{key: r[key].decode("utf-8", errors="replace") for key in ("prompt", "generated",
                                                                                     "reference")} for r in rows[:3]]
    return result
