"""Nearest-concept search on paragraph concepts (the mean of their unit concepts): cross-lingual xsim error
against English (with a parallel file) and top-1 retrieval between paired files and transcripts (blcm.data.pairs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blcm import DataError
from blcm.data.pairs import group_means, read_pairs
from blcm.eval.common import encode_units, nanmean
from bridges.modality import sniff


def paragraph_concepts(model, paragraphs: list[bytes], progress, max_units: int | None = None) -> torch.Tensor:
    """(n, d): the mean of each paragraph's unit concepts (of its first ``max_units``; None: all), each unit
    encoded as its paragraph's modality (sniffed once per paragraph)."""
    units = [model.units(p)[:max_units] for p in paragraphs]
    modalities = [sniff(p) for p, us in zip(paragraphs, units, strict=True) for _ in us]
    concepts = encode_units(model, [u for us in units for u in us], progress=progress, desc="unit batches",
                            modalities=modalities)
    return group_means(concepts, [len(us) for us in units])


def crosslingual(model, records: list[dict[str, str]], progress) -> dict:
    """xsim error per locale: the share of its paragraphs whose nearest English paragraph (cosine of mean
    unit concepts) is not their own translation. Every locale searches the same pool, all distinct English
    paragraphs of ``records``, so the error rates compare across locales (chance: 1 - 1/pool)."""
    english = sorted({r["en"] for r in records})
    foreign = sorted({t for r in records for k, t in r.items() if k != "en"})
    concepts = F.normalize(paragraph_concepts(model, [t.encode("utf-8") for t in english + foreign], progress), dim=-1)
    pool = concepts[: len(english)]
    en_index = {t: i for i, t in enumerate(english)}
    fx_index = {t: len(english) + i for i, t in enumerate(foreign)}
    out = {}
    for locale in sorted({k for r in records for k in r if k != "en"}):
        pairs = sorted({(en_index[r["en"]], fx_index[r[locale]]) for r in records if locale in r})
        truth = torch.tensor([e for e, _ in pairs])
        nearest = (concepts[[f for _, f in pairs]] @ pool.T).argmax(-1).cpu()
        out[locale] = {"pairs": len(pairs), "xsim_error": float((nearest != truth).float().mean())}
    if out:
        out["mean"] = {"pairs": sum(v["pairs"] for v in out.values()),
                       "xsim_error": nanmean(v["xsim_error"] for v in out.values())}
        out["pool"] = {"pairs": len(english), "xsim_error": 1 - 1 / len(english)}  # chance
    return out


def retrieval(model, pairs_dir: str, max_units: int | None, progress) -> dict:
    """Top-1 retrieval between the concepts of paired files (the mean over their first ``max_units`` units)
    and of their transcripts (blcm.data.pairs), per split: ``valid`` (pairs an alignment loss never trained on) and
    ``train``."""
    out = {}
    for split in ("valid", "train"):
        pairs = read_pairs(pairs_dir, split)
        if len(pairs) < 2:
            continue
        files = paragraph_concepts(model, [p.data for p in pairs], progress, max_units)
        texts = paragraph_concepts(model, [p.text for p in pairs], progress)
        out[split] = retrieval_accuracy(files, texts)
    if not out:
        raise DataError(f"{pairs_dir}: fewer than 2 pairs in each split, nothing to retrieve among")
    return out


def retrieval_accuracy(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Retrieval between paired vectors a (P, d) and b (P, d) by cosine, both ways: top-1 accuracy (chance 1/P)
    and the mean rank of the true partner among the P candidates (1 = first; chance (P + 1) / 2).

    Each side is centred on its own mean first. Concepts of different modalities sit around different
    means (a WAV's units are alike, whatever is said), and uncentred, that offset decides every
    nearest neighbour: every file retrieves the same transcript. The alignment loss sees centred
    vectors too (its batch norm uses the batch's statistics, per modality)."""
    a, b = a.float() - a.float().mean(0), b.float() - b.float().mean(0)
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (P, P)
    true = sim.diagonal()
    rank_a = 1 + (sim > true[:, None]).sum(1).float()  # (P,) rank of b_i among all b for a_i
    rank_b = 1 + (sim > true[None, :]).sum(0).float()  # (P,) rank of a_i among all a for b_i
    return {"pairs": len(a), "a_to_b": float((rank_a == 1).float().mean()),
            "b_to_a": float((rank_b == 1).float().mean()), "chance": 1 / len(a),
            "a_to_b_mean_rank": float(rank_a.mean()), "b_to_a_mean_rank": float(rank_b.mean()),
            "chance_mean_rank": (len(a) + 1) / 2}
