"""`blcm data fetch` and `blcm prepare`: get the default corpus, and cut documents into sharded units."""

from __future__ import annotations

from blcm import CLIError, DataError


def cmd_data_fetch(args) -> int:
    from blcm.data.corpus import fetch_corpus

    try:
        path = fetch_corpus(force=args.force)
    except OSError as e:
        raise CLIError(f"could not fetch the default corpus: {e}") from e
    print(path)
    return 0


def cmd_prepare(args) -> int:
    from blcm.data.prepare import prepare, summary

    try:
        manifest = prepare(args.inputs, args.out, segmenter=args.segmenter, max_unit_bytes=args.max_unit_bytes,
                           valid_percent=args.valid_percent, shard_docs=args.shard_docs, text_field=args.text_field,
                           valid_inputs=args.valid, force=args.force, progress=not args.no_progress,
                           other=args.other_segmenter)
    except DataError as e:
        raise CLIError(str(e)) from None
    print(summary(args.out, manifest))
    return 0
