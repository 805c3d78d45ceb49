"""Generation: continue documents from their first k units and score the continuation against the true next units.

Per continuation: ROUGE-L against its own truth and against the next document's (their difference, the
prompt-relevance gap, is about 0 when every prompt gets the same text), ROUGE-L against the next document's
continuation (about 1 when the core ignores its prompt; the true texts' is the reference), REP-4 and OVL-3
(word n-grams, blcm.eval.text), whether it is valid UTF-8, the share of its words of two or more letters found
in a vocabulary (when one is given; one-letter "words" would let letter soup pass), and its bits per byte given
the prompt under an independent byte LM; the same for the true text.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from blcm.eval.common import Timer, by_source, nanmean
from blcm.eval.inputs import EvalDocument
from blcm.eval.likelihood import unit_log_probs
from blcm.eval.settings import EvalSettings
from blcm.eval.text import is_utf8, overlap, repetition, rouge_l, words
from blt.entropy import EntropyModel


def generation(generate: Callable[[bytes, bytes], bytes], docs: list[EvalDocument], settings: EvalSettings,
               speed: dict, progress, byte_lm: EntropyModel | None = None,
               vocabulary: set[str] | None = None) -> dict:
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
    generated, references = [r["generated"] for r in rows], [r["reference"] for r in rows]
    others = references[1:] + references[:1]  # another prompt's truth: the next document's
    pairs = {"rouge_l_other": (generated, others), "rouge_l_alike": (generated, generated[1:] + generated[:1]),
             "reference_rouge_l_alike": (references, others)}  # each against the next document's
    for name, (texts, against) in pairs.items():  # with one prompt there is no other to compare with
        for r, score in zip(rows, rouge_l(texts, against) if len(rows) > 1 else [math.nan] * len(rows), strict=True):
            r[name] = score
    for r, own in zip(rows, rouge_l(generated, references), strict=True):
        r["rouge_l"] = own
    if byte_lm is not None:
        for key in ("generated", "reference"):
            score_nats(byte_lm, rows, key, settings.mi_context)

    def aggregate(group: list[dict]) -> dict:
        text = [{key: r[key].decode("utf-8", errors="replace") for key in ("prompt", "reference", "generated")}
                for r in group]
        result = {"documents": len(group), "rouge_l": nanmean(r["rouge_l"] for r in group),
                  "rouge_l_other": nanmean(r["rouge_l_other"] for r in group),
                  "rouge_l_alike": nanmean(r["rouge_l_alike"] for r in group),
                  "reference_rouge_l_alike": nanmean(r["reference_rouge_l_alike"] for r in group),
                  "rep4": nanmean(repetition(t["generated"], 4) for t in text),
                  "ovl3": nanmean(overlap(t["generated"], t["prompt"], 3) for t in text),
                  "utf8": sum(is_utf8(r["generated"]) for r in group) / len(group),
                  "reference_rep4": nanmean(repetition(t["reference"], 4) for t in text),
                  "reference_ovl3": nanmean(overlap(t["reference"], t["prompt"], 3) for t in text),
                  "generated_bytes": sum(len(r["generated"]) for r in group),
                  "reference_bytes": sum(len(r["reference"]) for r in group)}
        result["relevance_gap"] = result["rouge_l"] - result["rouge_l_other"]
        if vocabulary is not None:
            for key, prefix in (("generated", ""), ("reference", "reference_")):
                tokens = [w for t in text for w in words(t[key]) if len(w) >= 2 and w.isalpha()]
                result[prefix + "in_vocabulary"] = (sum(w in vocabulary for w in tokens) / len(tokens) if tokens
                                                    else math.nan)
        if byte_lm is not None:
            for key, prefix in (("generated", ""), ("reference", "reference_")):
                scored = [r for r in group if r[key]]
                nbytes = sum(len(r[key]) for r in scored)
                result[prefix + "byte_lm_bpb"] = (sum(r[key + "_nats"] for r in scored) / nbytes / math.log(2)
                                                  if nbytes else math.nan)
        return result

    result = by_source(rows, aggregate)
    result["examples"] = [{key: r[key].decode("utf-8", errors="replace") for key in ("prompt", "generated",
                                                                                     "reference")} for r in rows[:5]]
    return result


def score_nats(byte_lm: EntropyModel, rows: list[dict], key: str, context_bytes: int, batch_size: int = 16) -> None:
    """Set ``row[key + "_nats"]``: -log p(row[key] | the prompt's last ``context_bytes`` bytes) under the byte LM."""
    scored = [r for r in rows if r[key]]
    for i in range(0, len(scored), batch_size):
        block = scored[i : i + batch_size]
        logp = unit_log_probs(byte_lm, [r["prompt"][-context_bytes:] for r in block], [r[key] for r in block])
        for r, lp in zip(block, logp, strict=True):
            r[key + "_nats"] = -lp
