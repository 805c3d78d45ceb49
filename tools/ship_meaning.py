"""Train and package the meaning codec that ships inside byte-lcm (bridges/pretrained/meaning-codec).

    python tools/ship_meaning.py train --minutes 60        # a run of 60 minutes from scratch (or on, with --resume)
    python tools/ship_meaning.py train --minutes 30 --resume
    python tools/ship_meaning.py package                   # the weights + SHA-256 pins, and the held-out report

``train`` starts the decoder from the shipped entropy model and trains the encoder, the decoder and a next-meaning
predictor together on the shared corpora (tools/meaning_data.py; blcm/meaning.py has the objective). Every
``--eval-minutes`` it scores held-out data and appends to runs/<name>/curve.jsonl (translation retrieval on
parallel/valid units, the next-meaning accuracy on en/valid windows, the decoder's bits per byte of en/valid units
given their meaning, a noised meaning and none), and writes a checkpoint it can resume from, batch-exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from catalogues import catalogue_pairs, held_out_records  # noqa: E402
from curve_log import record  # noqa: E402
from meaning_data import SHARED, Batches, english_documents, paragraph_pairs, texts_before, translation_pairs  # noqa: E402

from blcm.meaning import MeaningLossConfig, MeaningModel, next_meaning_nce  # noqa: E402
from blt.ids import pad_batch  # noqa: E402
from blt.pretrained import load_shipped_entropy_model  # noqa: E402
from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig  # noqa: E402

RUNS = REPO / "runs"
EVAL_UNITS = 512  # en/valid units whose bits per byte are scored
EVAL_PAIRS = 1024  # parallel/valid unit pairs for the retrieval error
NORMALIZER_UNITS = 10000  # en/train units the concept scaling is fitted on
FP16_TOLERANCE = 0.005  # bits per byte fp16 weights may cost before fp32 is kept
FP16_COSINE = 0.999  # the least cosine between a unit's fp16 and fp32 meanings before fp32 is kept
# MeaningLossConfig's fields that `train` takes as flags (the temperature and the unconditional share stay fixed)
LOSS_FLAGS = tuple(f.name for f in fields(MeaningLossConfig) if f.name not in ("temperature", "unconditional"))


def build(args) -> tuple[MeaningCodec, MeaningModel]:
    config = MeaningCodecConfig(encoder={"patching": args.patching, "layers": args.layers,
                                         "byte_layers": args.byte_layers},
                                decoder={"prefix": args.prefix, "context": args.context})
    codec = MeaningCodec(config, args.meaning_dim)
    codec.decoder.start_from(load_shipped_entropy_model()[0])
    loss = MeaningLossConfig(**{name: getattr(args, name) for name in LOSS_FLAGS})
    return codec, MeaningModel(codec.encoder, codec.decoder, loss)


@torch.no_grad()
def evaluate(model: MeaningModel, held_out: dict) -> dict[str, float]:
    """The curve's held-out figures (see the module docstring)."""
    model.eval()
    enc = model.encoder
    retrieval = {"unit_retrieval_error": retrieval_error(enc, held_out["pairs"]),
                 "software_retrieval_error": retrieval_error(enc, held_out["software_pairs"])}
    ids, lengths, valid, _ = held_out["windows"]
    m_w = enc(ids, lengths).view(*valid.shape, -1)
    _, next_accuracy = next_meaning_nce(model.predictor, m_w, valid, model.loss.temperature)
    units = held_out["units"]
    ids, lengths = pad_batch(units)
    meanings = torch.cat([enc(*pad_batch(units[i : i + 256])) for i in range(0, len(units), 256)])
    noisy = F.normalize(meanings + 0.5 * torch.randn_like(meanings) / meanings.shape[-1] ** 0.5, dim=-1)
    bpb = {}
    runs = [("meaning", meanings, None), ("noised_0.5", noisy, None), ("none", torch.zeros_like(meanings), None)]
    if model.decoder.config.context:  # the same units after their text, with and without their meaning
        context = model.decoder.context_ids(held_out["before"], len(units))
        runs += [("context_meaning", meanings, context), ("context_none", torch.zeros_like(meanings), context)]
    for name, m, context in runs:
        nats = model.decoder(ids, lengths, m, context).nats.sum()
        bpb[f"bpb_{name}"] = float(nats / (lengths + 1).sum() / math.log(2))
    spread = float(meanings.mean(0).norm())  # 1 if every meaning were the same, ~0 if spread over the sphere
    model.train()
    return {**retrieval, "next_accuracy_valid": float(next_accuracy), **bpb,
            "mean_meaning_norm": spread}


def retrieval_error(encoder, pairs: list[tuple[bytes, bytes]]) -> float:
    """The share of translations whose nearest unit among the pairs' English units is not their own (distinct
    English units: one translation each)."""
    a, b = zip(*pairs, strict=True)
    m_a = torch.cat([encoder(*pad_batch(list(a[i : i + 256]))) for i in range(0, len(a), 256)])
    m_b = torch.cat([encoder(*pad_batch(list(b[i : i + 256]))) for i in range(0, len(b), 256)])
    return float(((m_b @ m_a.T).argmax(-1) != torch.arange(len(a))).float().mean())


def held_out_data(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    pairs = translation_pairs("valid")
    pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=g)[:EVAL_PAIRS].tolist()]
    docs = english_documents("valid")
    units = [u for d in docs for u in d]
    texts = [t for d in docs for t in texts_before(d)]
    chosen = torch.randperm(len(units), generator=g)[:EVAL_UNITS].tolist()
    units, before = [units[i] for i in chosen], [texts[i] for i in chosen]
    windows = Batches([], docs, g).window_batch(64, 16)
    # Software messages of a wheel never trained on (tools/catalogues.py), one translation each, locales in turn.
    software = []
    for i, message in enumerate(held_out_records()):
        locales = sorted(k for k in message if k != "en")
        software.append((message["en"].encode(), message[locales[i % len(locales)]].encode()))
    return {"pairs": pairs, "windows": windows, "units": units, "before": before, "software_pairs": software}


def cmd_train(args) -> int:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the meaning codec trains on the shared corpora")
    torch.manual_seed(args.seed)
    run = RUNS / args.name
    run.mkdir(parents=True, exist_ok=True)
    codec, model = build(args)
    if args.frozen_encoder:
        if not args.start_from:
            sys.exit("--frozen-encoder trains a decoder for a trained encoder: give --start-from RUN")
        for p in (*model.encoder.parameters(), *model.predictor.parameters()):
            p.requires_grad_(False)
    if args.start_from:
        model.load_state_dict(torch.load(RUNS / args.start_from / "last.pt", weights_only=True)["model"])
    # The decoder's meaning layers start at zero and must learn fast; the byte LM under them is trained already.
    reads_meaning = {id(p) for layer in codec.decoder.conditioning_layers() for p in layer.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trained if id(p) not in reads_meaning], "lr_mult": 1.0},
              {"params": [p for p in trained if id(p) in reads_meaning], "lr_mult": args.meaning_lr_mult}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    pairs = translation_pairs("train") + (catalogue_pairs("train") if args.catalogues else [])
    batches = Batches(pairs, english_documents("train"), torch.Generator().manual_seed(args.seed),
                      paragraph_pairs("train") if args.paragraph else [])
    held_out = held_out_data()
    step, elapsed = 0, 0.0
    checkpoint = run / "last.pt"
    if args.resume:
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batches.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed"]
    (run / "args.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "run"}, indent=1) + "\n")
    budget = elapsed + args.minutes * 60
    start, next_eval = time.time() - elapsed, elapsed + args.eval_minutes * 60
    print(f"meaning model: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f} M trainable "
          f"parameters; {len(batches.english)} English units in {len(batches.pairs)} pairs, "
          f"{len(batches.documents)} documents; from step {step}", flush=True)
    with open(run / "curve.jsonl", "a") as curve:
        while True:
            elapsed = time.time() - start
            if elapsed >= next_eval or elapsed >= budget:
                record(curve, {"step": step, "minutes": elapsed / 60, **evaluate(model, held_out)}, checkpoint,
                       {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "elapsed": time.time() - start, "generator": batches.generator.get_state(),
                        "torch_rng": torch.get_rng_state(), "codec_config": asdict(codec.config),
                        "meaning_dim": codec.concept_dim})
                next_eval += args.eval_minutes * 60
                if elapsed >= budget:
                    return 0
            for group in optimizer.param_groups:
                group["lr"] = group["lr_mult"] * args.lr * min(1.0, (step + 1) / args.warmup)
            windows = batches.window_batch(args.docs, args.units)
            if args.frozen_encoder:
                total, terms = model.writing_only(windows)
            else:
                total, terms = model.losses(batches.pair_batch(args.pairs), windows,
                                            batches.paragraph_batch(args.paragraphs) if args.paragraph else None,
                                            batches.views(*windows[:2]) if args.identity else None)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            step += 1
            if step % args.log_every == 0:
                terms = {name: float(value) for name, value in terms.items()}
                curve.write(json.dumps({"step": step, "minutes": (time.time() - start) / 60, **terms}) + "\n")
                curve.flush()


def codec_from_checkpoint(path: Path) -> MeaningCodec:
    """The meaning codec (encoder + decoder, eval mode, its concept scaling not fitted yet) of a training checkpoint."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    codec = MeaningCodec(MeaningCodecConfig(**state["codec_config"]), int(state["meaning_dim"]))
    for name in ("encoder", "decoder"):  # the predictor trained beside them does not ship
        getattr(codec, name).load_state_dict({k.removeprefix(f"{name}."): v for k, v in state["model"].items()
                                              if k.startswith(f"{name}.")})
    return codec.eval()


def cmd_package(args) -> int:
    """The checkpoint's codec, its concept scaling fitted on NORMALIZER_UNITS en/train units, in fp16 unless that costs
    more than FP16_TOLERANCE bits per byte or moves meanings by more than FP16_COSINE, written into the package with
    its pins; the choice goes to the report."""
    from blt.pretrained import pin_files, write_pins
    from bridges.pretrained import meaning as shipped
    from bridges.pretrained.meaning import load_meaning_codec, save_meaning_codec

    codec = codec_from_checkpoint(RUNS / args.name / "last.pt")
    train_units = [u for doc in english_documents("train") for u in doc]
    g = torch.Generator().manual_seed(0)
    codec.fit_normalizer([train_units[i] for i in torch.randperm(len(train_units), generator=g)[:NORMALIZER_UNITS]])
    half_dir = RUNS / args.name / "fp16"
    save_meaning_codec(codec, half_dir, torch.float16)
    half = load_meaning_codec(half_dir)
    units = held_out_data()["units"]
    ids, lengths = pad_batch(units)
    with torch.no_grad():
        m32, m16 = codec.embed(units), half.embed(units)
        bpb = [float(c.decoder(ids, lengths, m).nats.sum() / (lengths + 1).sum() / math.log(2))
               for c, m in ((codec, m32), (half, m16))]
    cosine = float(F.cosine_similarity(m32, m16).min())
    fp16 = bpb[1] - bpb[0] <= FP16_TOLERANCE and cosine >= FP16_COSINE
    target = RUNS / args.name / "export" if args.no_ship else shipped.SHIPPED_MEANING
    save_meaning_codec(codec, target, torch.float16 if fp16 else torch.float32)
    pins = pin_files(target, ["config.json", "model.safetensors"])
    if not args.no_ship:
        write_pins(Path(shipped.__file__), pins)
    report = {"checkpoint": str(RUNS / args.name / "last.pt"), "dtype": "fp16" if fp16 else "fp32",
              "bpb_fp32": bpb[0], "bpb_fp16": bpb[1], "min_cosine_fp16_fp32": cosine, "pinned": pins,
              "params": sum(p.numel() for p in codec.parameters()), "config": asdict(codec.config),
              "meaning_dim": codec.concept_dim, "machine": f"{platform.node()} {platform.platform()}",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out = RUNS / args.name / "report.json" if args.no_ship else REPO / "benchmarks" / "results" / "shipped-meaning.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("dtype", "bpb_fp32", "bpb_fp16", "min_cosine_fp16_fp32")}))
    print(f"{'exported' if args.no_ship else 'shipped'} {target.relative_to(REPO)}, report {out.relative_to(REPO)}")
    return 0


# The shipped codec's recipe, phase by phase: (run name, `train` arguments); `recipe` runs them, then `package`s the
# last. Phase 1 trains everything jointly on the handbook's unit pairs; phase 2 goes on with the software
# catalogues, the paragraph term and less noise; phase 3 trains the decoder alone on the encoder as it is.
RECIPE = (
    ("meaning-joint", ["--minutes", "65"]),
    ("meaning-more", ["--start-from", "meaning-joint", "--minutes", "60", "--catalogues", "--noise", "0.25",
                      "--paragraph", "1"]),
    ("meaning-write", ["--start-from", "meaning-more", "--frozen-encoder", "--minutes", "20", "--noise", "0.25"]),
)


def cmd_recipe(args) -> int:
    """Every phase of RECIPE in order (a finished phase is skipped, an interrupted one resumed), then package."""
    for name, phase in RECIPE:
        at = phase.index("--minutes") + 1
        minutes = float(phase[at])
        checkpoint = RUNS / name / "last.pt"
        done = torch.load(checkpoint, weights_only=True)["elapsed"] / 60 if checkpoint.is_file() else 0.0
        if done >= minutes:
            print(f"{name}: done ({done:.1f} of {minutes:g} minutes)")
            continue
        left = [*phase[:at], f"{minutes - done:g}", *phase[at + 1 :]]
        main(["train", "--name", name, *left, *(["--resume"] if done else [])])
    return main(["package", "--name", RECIPE[-1][0], *(["--no-ship"] if args.no_ship else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    t = commands.add_parser("train", help="train the meaning encoder and decoder (resumable)")
    t.add_argument("--name", default="ship-meaning", help="the run's folder under runs/")
    t.add_argument("--minutes", type=float, default=60.0, help="wall-clock minutes to train (more, with --resume)")
    t.add_argument("--resume", action="store_true", help="go on from runs/<name>/last.pt")
    t.add_argument("--eval-minutes", type=float, default=10.0, help="minutes between held-out scores + checkpoints")
    t.add_argument("--meaning-dim", type=int, default=512)
    t.add_argument("--patching", default="static", choices=("entropy", "static"),
                   help="the encoder's patches (static: the shipped codec's; entropy: BLT's, slower per step)")
    t.add_argument("--layers", type=int, default=2, help="patch transformer blocks")
    t.add_argument("--byte-layers", type=int, default=0, help="local byte transformer blocks before pooling")
    t.add_argument("--prefix", type=int, default=4, help="meaning slots the decoder reads before BOS")
    t.add_argument("--context", type=int, default=0, help="bytes of the text before a unit the decoder reads "
                   "(0: none; it adds no weights, so --start-from a run without it works)")
    t.add_argument("--pairs", type=int, default=64, help="translation pairs a step")
    t.add_argument("--paragraphs", type=int, default=16, help="paragraph pairs a step (for --paragraph > 0)")
    t.add_argument("--catalogues", action="store_true", help="translation pairs of software message catalogues "
                   "too (tools/catalogues.py: pinned PyPI wheels, fetched once)")
    t.add_argument("--docs", type=int, default=8, help="document windows a step")
    t.add_argument("--units", type=int, default=16, help="units a window")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--meaning-lr-mult", type=float, default=10.0,
                   help="the learning rate of the decoder's meaning layers, relative to --lr")
    for name in LOSS_FLAGS:
        default, flag, help_ = getattr(MeaningLossConfig, name), f"--{name.replace('_', '-')}", \
            f"MeaningLossConfig.{name} (blcm/meaning.py)"
        if isinstance(default, bool):
            t.add_argument(flag, action="store_true", help=help_)
        else:
            t.add_argument(flag, type=type(default), default=default, help=help_)
    t.add_argument("--start-from", metavar="RUN", help="start the encoder, decoder and predictor from runs/RUN/last.pt "
                   "(a fresh optimiser, step 0)")
    t.add_argument("--frozen-encoder", action="store_true", help="the decoder's stage: only the writing term, on "
                   "en/train units, from the encoder's meanings as they are (give --start-from)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=25)
    t.set_defaults(run=cmd_train)
    p = commands.add_parser("package", help="ship a run's codec: weights into the package, pins, a report")
    p.add_argument("--name", default="ship-meaning", help="the run's folder under runs/ (its last.pt)")
    p.add_argument("--no-ship", action="store_true", help="leave the package alone: the export goes to "
                   "runs/<name>/export (blcm's init_codec_from reads it), the report to runs/<name>/report.json")
    p.set_defaults(run=cmd_package)
    r = commands.add_parser("recipe", help="the shipped codec from scratch: every phase of RECIPE, then package "
                            "(about 2.5 hours on one core; run it again to resume)")
    r.add_argument("--no-ship", action="store_true", help="package --no-ship: leave the package alone")
    r.set_defaults(run=cmd_recipe)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
