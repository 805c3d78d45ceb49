"""`blcm patch FILE`: cut any file into BLT patches and show them (text, JSON, or a figure).

Entropy modes score the bytes with the shipped entropy model (blt.pretrained) unless ``--model`` or
$BLCM_ENTROPY_MODEL names another, and take the threshold of the file's modality from it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from blcm import CLIError
from blcm.commands.inputs import read_bytes


def cmd_patch(args) -> int:
    import torch

    from blt import ids as byte_ids
    from blt.patching import Patcher
    from blt.pretrained import SHIPPED_NAME, PretrainedError, load_entropy_model
    from bridges.modality import sniff

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
    modality = sniff(data) if args.modality == "auto" else args.modality
    entropies, threshold, source = None, None, None
    if patcher.needs_entropies:
        source = args.model or os.environ.get("BLCM_ENTROPY_MODEL") or SHIPPED_NAME
        try:
            model, thresholds = load_entropy_model(source)
        except PretrainedError as e:
            raise CLIError(str(e)) from None
        with torch.inference_mode():
            entropies = model.entropies(ids, lengths, batch_size=args.batch_size, progress=len(data) > 1 << 18)
        threshold = args.threshold
        if threshold is None and thresholds is not None and args.mode == "entropy" and args.target_patch_size is None:
            threshold = thresholds.pick("file", modality)
        elif threshold is None and len(data):
            target = args.target_patch_size or (thresholds.pick("target_patch_sizes", modality) if thresholds else 4.5)
            try:
                threshold = patcher.calibrate(ids, lengths, entropies, target, clamp=args.target_patch_size is None)
            except ValueError as e:
                raise CLIError(str(e)) from None
    patches = patcher(ids, lengths, entropies, threshold)
    sizes = patches.lengths[0, : int(patches.counts[0])].tolist()
    assert sum(sizes) == len(data)

    if args.format == "json":
        json.dump({"lengths": sizes, "entropies": None if entropies is None else
                   [round(h, 4) for h in entropies[0].tolist()], "threshold": threshold, "mode": args.mode,
                   "modality": modality, "model": None if source is None else str(source)},
                  sys.stdout)
        print()
    else:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                           and "NO_COLOR" not in os.environ)
        sys.stdout.write(render_patches(data, sizes, color) + "\n")
        mean = len(data) / len(sizes) if sizes else 0.0
        thr = "" if threshold is None else f", {modality} threshold {threshold:.4f} nats ({source} entropy model)"
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
