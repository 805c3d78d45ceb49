"""The whole `blcm eval` suite: every section that applies to a ByteLCM or a next-byte baseline, timed."""

from __future__ import annotations

from dataclasses import asdict

import torch

from blcm.data.documents import Document
from blcm.eval.common import Timer, encode_units, no_progress_bar, progress_bar
from blcm.eval.generation import generation
from blcm.eval.inputs import EvalDocument, data_summary
from blcm.eval.likelihood import byte_lm_bits_per_byte
from blcm.eval.patching import patching
from blcm.eval.prediction import prediction
from blcm.eval.reconstruction import reconstruction
from blcm.eval.search import crosslingual, retrieval
from blcm.eval.settings import EvalSettings
from blt.entropy import EXPORT_KIND, EntropyModel
from blt.pretrained import load_shipped_entropy_model
from bridges.modality import sniff
from bridges.segment import build_segmenter


@torch.no_grad()
def evaluate(model, documents: list[Document], settings: EvalSettings, byte_lm: EntropyModel | None = None,
             parallel: list[dict[str, str]] | None = None, progress: bool = True, pairs: str | None = None,
             vocabulary: set[str] | None = None) -> dict:
    """Every section that applies to ``model`` (a ByteLCM, or an EntropyModel as a next-byte baseline).
    ``byte_lm`` scores MI and a byte LM's next-unit bits per byte for a ByteLCM (default for MI: the
    encoder's own entropy model) and the generated text (default: the shipped entropy model, the same for
    both kinds of model); ``pairs`` a directory of paired files and transcripts (retrieval); ``vocabulary``
    the words generated words are looked up in."""
    from blcm.model import ByteLCM

    bar = progress_bar if progress else no_progress_bar
    torch.manual_seed(settings.seed)
    speed: dict[str, float] = {}
    seconds: dict[str, float] = {}
    result: dict = {"settings": {**asdict(settings), "sampling": asdict(settings.sampling)}}

    def timed(name: str, fn, *args, **kwargs):
        with Timer() as t:
            out = fn(*args, **kwargs)
        seconds[name] = round(t.seconds, 2)
        return out

    if not isinstance(model, ByteLCM | EntropyModel):
        raise TypeError(f"cannot evaluate a {type(model).__name__}")
    # A byte LM has no segmenter: it is scored on the units of the ByteLCM it is compared with.
    split = model.units if isinstance(model, ByteLCM) else build_segmenter(settings.baseline_segmenter).split
    docs = [EvalDocument(d.source, split(d.data)[: settings.window], sniff(d.data)) for d in documents]
    docs = [d for d in docs if d.units]
    result["data"] = data_summary(docs)
    if isinstance(model, ByteLCM):
        result["model"] = {"type": "ByteLCM", "parameters": model.num_params()}
        model.check_sampling(settings.sampling)
        concepts = timed("encode", encode_units, model, [u for d in docs for u in d.units],
                         modalities=[d.modality for d in docs for _ in d.units])
        speed["encode_units_per_s"] = result["data"]["units"] / max(seconds["encode"], 1e-9)
        result["reconstruction"] = timed("reconstruction", reconstruction, model, docs, concepts, settings, speed, bar)
        scorer = byte_lm if byte_lm is not None else model.codec.entropy_model
        result["prediction"], result["next_unit_bpb"] = timed("prediction", prediction, model, docs, concepts,
                                                              settings, scorer, bar)
        result["mi_byte_lm"] = ("given" if byte_lm is not None else
                                "the encoder's entropy model" if scorer is not None else None)
        if byte_lm is not None:
            result["byte_lm_next_unit_bpb"] = timed("byte_lm_bpb", byte_lm_bits_per_byte, byte_lm, docs)
        if model.codec.entropy_model is not None and model.codec.ready:
            result["patching"] = timed("patching", patching, model, docs)

        def continue_document(prompt: bytes, reference: bytes) -> bytes:
            return model.generate(prompt, max_units=settings.continuation_units, sampling=settings.sampling,
                                  seed=settings.seed, temperature=settings.temperature, reencode=settings.reencode)
    else:
        result["model"] = {"type": EXPORT_KIND, "parameters": {"byte_lm": model.num_params()}}
        result["next_unit_bpb"] = timed("next_unit_bpb", byte_lm_bits_per_byte, model, docs)
        speed["scored_bytes_per_s"] = result["data"]["bytes"] / max(seconds["next_unit_bpb"], 1e-9)
        generator = torch.Generator(model.head.weight.device).manual_seed(settings.seed)

        def continue_document(prompt: bytes, reference: bytes) -> bytes:
            budget = max(1, min(len(reference), model.config.context - 2))  # as many bytes as the true continuation
            return model.generate(prompt, max_new_bytes=budget, temperature=settings.temperature, generator=generator)
    judge = byte_lm if byte_lm is not None else load_shipped_entropy_model()[0]
    result["generation_byte_lm"] = "given" if byte_lm is not None else "the shipped entropy model"
    result["generation"] = timed("generation", generation, continue_document, docs, settings, speed, bar, judge,
                                 vocabulary)
    if parallel and isinstance(model, ByteLCM):
        result["crosslingual"] = timed("crosslingual", crosslingual, model, parallel, bar)
    if pairs is not None and isinstance(model, ByteLCM):
        result["retrieval"] = timed("retrieval", retrieval, model, pairs, settings.pair_units, bar)
    result["speed"] = speed
    result["seconds"] = seconds
    return result
