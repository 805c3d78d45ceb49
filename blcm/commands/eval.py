"""`blcm eval`: the evaluation suite (blcm.eval) on an exported model; JSON, markdown and TensorBoard reports.

Its measurement flags are EvalSettings' fields (blcm.eval.settings): their defaults and help text live there once.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields, replace
from pathlib import Path

from blcm import CLIError, DataError
from blcm.commands.inputs import load_model
from blcm.eval.settings import EvalSettings
from primitives.atomic import atomic_write


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for each field of EvalSettings (``--max-docs`` for max_docs), and for each of its ``parts``."""
    defaults = EvalSettings()
    hints = typing.get_type_hints(EvalSettings)
    for f in fields(EvalSettings):
        value, options = getattr(defaults, f.name), dict(f.metadata)
        parts = options.pop("parts", None)
        if parts:
            for key, (flag, help) in parts.items():
                part = value[key] if isinstance(value, dict) else getattr(value, key)
                parser.add_argument(flag, type=type(part), default=part, help=help.format(default=shown(part)))
            continue
        if isinstance(value, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), action="store_true", **options)
            continue
        if isinstance(value, tuple):
            options["nargs"] = "+"
        default = 0 if value is None else list(value) if isinstance(value, tuple) else value
        options["help"] = options["help"].format(default=shown(default))
        parser.add_argument("--" + f.name.replace("_", "-"), type=value_type(hints[f.name]), default=default,
                            **options)


def settings_from(args: argparse.Namespace) -> EvalSettings:
    """The EvalSettings that the flags of ``add_settings_flags`` were given (0 for an ``int | None``: None)."""
    defaults = EvalSettings()
    hints = typing.get_type_hints(EvalSettings)
    values = {}
    for f in fields(EvalSettings):
        parts = f.metadata.get("parts")
        if parts:
            given = {key: getattr(args, flag.removeprefix("--").replace("-", "_")) for key, (flag, _) in parts.items()}
            value = getattr(defaults, f.name)
            values[f.name] = {**value, **given} if isinstance(value, dict) else replace(value, **given)
            continue
        given = getattr(args, f.name)
        if isinstance(given, list):
            given = tuple(given)
        elif given == 0 and type(None) in typing.get_args(hints[f.name]):  # int | None: 0 is None
            given = None
        values[f.name] = given
    return EvalSettings(**values)


def value_type(hint) -> type:
    """What a flag's values are: int for ``int | None``, float for ``tuple[float, ...]``, else the type itself."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def shown(default) -> str:
    """A default as the help text says it: 1 not 1.0, a list space-separated as it is typed."""
    if isinstance(default, list):
        return " ".join(map(shown, default))
    return f"{default:g}" if isinstance(default, float) else str(default)


def cmd_eval(args) -> int:
    """Evaluate a ByteLCM or a byte LM on documents; JSON to --out, the markdown report next to it and to stdout."""
    import json

    import torch

    from blcm.data.pairs import read_pairs
    from blcm.eval import evaluate, json_ready, log_tensorboard, read_documents, read_parallel, render_markdown
    from blcm.eval.text import vocabulary
    from blt.entropy import EntropyModel

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = settings_from(args)
    except ValueError as e:
        raise CLIError(str(e)) from None
    out = Path(args.out)
    if out.suffix != ".json":
        raise CLIError(f"--out must name a .json file (the markdown report goes next to it), got {args.out}")
    model = load_model(args.model, byte_lm=True, decoder=args.decoder, ignore_meaning=args.ignore_meaning)
    if isinstance(model, EntropyModel) and (args.byte_lm or args.parallel or args.pairs):
        raise CLIError(f"{args.model} is a byte LM: --byte-lm, --parallel and --pairs apply to a ByteLCM only")
    byte_lm = load_model(args.byte_lm, byte_lm=True) if args.byte_lm else None
    if byte_lm is not None and not isinstance(byte_lm, EntropyModel):
        raise CLIError(f"--byte-lm {args.byte_lm} is a ByteLCM; give an exported byte LM (EntropyModel)")
    try:
        documents = read_documents(args.data, settings.max_docs, args.text_field, args.group_by)
        words = (vocabulary(d.data for d in read_documents(args.vocabulary, None, args.text_field))
                 if args.vocabulary else None)
        parallel = read_parallel(args.parallel, settings.parallel_max) if args.parallel else None
        if args.pairs:
            read_pairs(args.pairs)  # a bad directory fails now, not after the other sections
        result = evaluate(model, documents, settings, byte_lm=byte_lm, parallel=parallel,
                          progress=not args.no_progress, pairs=args.pairs, vocabulary=words)
    except (DataError, ValueError) as e:
        raise CLIError(str(e)) from None
    result["inputs"] = {"model": args.model, "decoder": args.decoder, "ignore_meaning": args.ignore_meaning,
                        "data": args.data, "byte_lm": args.byte_lm, "parallel": args.parallel, "pairs": args.pairs,
                        "vocabulary": args.vocabulary}
    report = render_markdown(result)
    try:
        atomic_write(out, json.dumps(json_ready(result), indent=2, allow_nan=False))
        atomic_write(out.with_suffix(".md"), report)
    except OSError as e:
        raise CLIError(f"cannot write {out}: {e.strerror or e}") from None
    if args.tensorboard:
        log_tensorboard(result, args.tensorboard)
    print(report)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0
