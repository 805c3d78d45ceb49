"""Prediction (teacher-forced, LCM paper §2.4.1): how close the core's predicted concept ĉ of each next unit is
to the true c, against the copy-last baseline, and the decoder's next-unit bits per byte given ĉ.

- l2 and CA (ranked within pools of CA_POOL predictions), for ĉ and for the copy-last prediction;
- PAR: the mean best context cosine of ĉ over that of c;
- round-trip l2: decode ĉ, re-encode it, distance to c;
- MI = (log p(ŝ | units before) - log p(ŝ)) / |ŝ| of the decoded ŝ under a byte LM, in nats per byte.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils.rnn import pad_sequence

from blcm.eval.common import bits_per_byte, by_source, encode_units, nanmean
from blcm.eval.inputs import EvalDocument
from blcm.eval.likelihood import mutual_information
from blcm.eval.settings import EvalSettings
from blt.entropy import EntropyModel
from blt.ids import pad_batch
from bridges.modality import sniff
from concept_core.metrics import (
    TeacherForced,
    context_cosine,
    contrastive_accuracy,
    l2,
    teacher_forced_predictions,
)

CA_POOL = 256  # predictions a CA candidate pool holds


@torch.no_grad()  # called on its own too (tests, benchmarks), not only inside evaluate()
def prediction(model, docs: list[EvalDocument], concepts: torch.Tensor, settings: EvalSettings,
               byte_lm: EntropyModel | None, progress) -> tuple[dict, dict]:
    """concepts (U, d): the units of ``docs`` in order. -> (prediction metrics by source, the ByteLCM's
    next-unit bits per byte by source)."""
    per_doc = [(d, c) for d, c in zip(docs, concepts.split([len(d.units) for d in docs]), strict=True)
               if len(d.units) >= 2]
    if not per_doc:
        return {}, {}
    docs = [d for d, _ in per_doc]
    sequences = pad_sequence([c for _, c in per_doc], batch_first=True)  # (B, N, d)
    mask = pad_sequence([torch.ones(len(c), dtype=torch.bool, device=c.device) for _, c in per_doc],
                        batch_first=True)  # (B, N)
    generator = torch.Generator(model.device).manual_seed(settings.seed)
    tf = teacher_forced_predictions(model.core, sequences, mask, settings.sampling, generator)
    doc, k = tf.doc.tolist(), tf.position.tolist()
    true_units = [docs[b].units[j] for b, j in zip(doc, k, strict=True)]
    decoded = model.codec.decode(tf.pred, settings.temperature, None, generator)

    scores = concept_scores(tf, sequences, mask)
    scores["round_trip_l2"] = round_trip_l2(model, decoded, tf.target, [docs[b].modality for b in doc])
    scores["nats"] = decoder_nats(model, true_units, tf.pred)
    mi = [math.nan] * len(decoded)
    if byte_lm is not None:
        n = settings.mi_predictions
        contexts = [b"".join(docs[b].units[:j])[-settings.mi_context :] for b, j in zip(doc[:n], k[:n], strict=True)]
        mi[:n] = mutual_information(byte_lm, contexts, decoded[:n], progress=progress)
    rows = [{"source": docs[b].source, **{name: float(v[i]) for name, v in scores.items()}, "mi": mi[i],
             "empty": not decoded[i], "bytes": len(true_units[i]), "units": 1} for i, b in enumerate(doc)]

    def aggregate(group: list[dict]) -> dict:
        out = {name: nanmean(r[name] for r in group)
               for name in ("l2", "round_trip_l2", "ca", "mi", "copy_l2", "copy_ca", "mean_l2")}
        # PAR of the set: per-item ratios explode where the truth's best context cosine is near 0.
        par = nanmean(r["pred_cos"] for r in group) / nanmean(r["true_cos"] for r in group)
        return {"predictions": len(group), **out, "par": par,
                "mi_predictions": sum(not math.isnan(r["mi"]) for r in group),
                "empty_decodes": sum(r["empty"] for r in group) / len(group)}

    return by_source(rows, aggregate), by_source(rows, bits_per_byte)


def concept_scores(tf: TeacherForced, sequences: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per prediction (P,): l2 and CA of ĉ and of the copy-last prediction, l2 of the mean target (a constant
    prediction that knows the evaluated set's centre: where consecutive concepts are no closer than random
    ones it beats copy-last), and
    the best context cosine of ĉ and of c (PAR's numerator and denominator) among the concepts before it."""
    prefix = mask[tf.doc] & (torch.arange(mask.shape[1], device=mask.device) < tf.position[:, None])  # (P, N)
    return {"l2": l2(tf.pred, tf.target).cpu(), "copy_l2": l2(tf.previous, tf.target).cpu(),
            "ca": pooled_contrastive_accuracy(tf.pred, tf.target, tf.doc).cpu(),
            "copy_ca": pooled_contrastive_accuracy(tf.previous, tf.target, tf.doc).cpu(),
            "mean_l2": l2(tf.target.mean(0, keepdim=True), tf.target).cpu(),
            "pred_cos": context_cosine(tf.pred, sequences[tf.doc], prefix).cpu(),
            "true_cos": context_cosine(tf.target, sequences[tf.doc], prefix).cpu()}


def pooled_contrastive_accuracy(pred: torch.Tensor, target: torch.Tensor, doc: torch.Tensor,
                                pool: int = CA_POOL) -> torch.Tensor:
    """CA with each prediction ranked among the targets of its pool of ``pool`` consecutive predictions (as
    a validation batch is in training): comparable across data sizes, and memory stays pool² per pool."""
    return torch.cat([contrastive_accuracy(pred[s : s + pool], target[s : s + pool], doc_ids=doc[s : s + pool])
                      for s in range(0, len(pred), pool)])


def round_trip_l2(model, decoded: list[bytes], target: torch.Tensor, modalities: list[str | None]) -> torch.Tensor:
    """(P,) l2 between each decoded prediction, encoded again as its document's modality, and the true concept;
    NaN where the decode is empty."""
    out = torch.full((len(decoded),), math.nan)
    decodable = [i for i, u in enumerate(decoded) if u]
    if decodable:
        units = [decoded[i] for i in decodable]
        re_encoded = encode_units(model, units, modalities=[modalities[i] or sniff(u)
                                                            for i, u in zip(decodable, units, strict=True)])
        out[decodable] = l2(re_encoded, target[decodable]).cpu()
    return out


def decoder_nats(model, units: list[bytes], pred: torch.Tensor) -> torch.Tensor:
    """(P,) the decoder's code length in nats of each true next unit (and its end) given the predicted concept;
    NaN for a space with its own decoder (SONAR), which gives no byte probabilities."""
    if model.codec.decoder is None:
        return torch.full((len(units),), math.nan)
    ids, lengths = pad_batch(units)
    return model.codec.scores(ids.to(model.device), lengths.to(model.device), pred).nats.cpu()
