"""`blcm export`: a training checkpoint -> an exported model directory (config.json + model.safetensors)."""

from __future__ import annotations

import sys

from blcm import CLIError


def cmd_export(args) -> int:
    """A training checkpoint (.ckpt) -> an exported model directory (config.json + model.safetensors)."""
    import torch

    from blcm.model import ByteLCM
    from blt.entropy import EntropyModel
    from primitives.export import CHECKPOINT_KEY, ExportFormatError, check_format

    exportable = {cls.export_kind: cls for cls in (ByteLCM, EntropyModel)}

    try:
        checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CLIError(f"{args.ckpt}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        reason = (str(e).strip().splitlines() or [""])[0]  # torch's unpickling errors run to many lines
        raise CLIError(f"{args.ckpt} is not a readable Lightning checkpoint ({type(e).__name__}: {reason})") from None
    export, state = checkpoint.get(CHECKPOINT_KEY), checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CLIError(f"{args.ckpt} has no state dict: not a byte-lcm checkpoint")
    if not isinstance(export, dict) or export.get("type") not in exportable:
        raise CLIError(f"{args.ckpt} names no model to export (a ByteLCMModule or EntropyLMModule checkpoint "
                       f"keeps one under {CHECKPOINT_KEY!r})")
    try:
        check_format(export.get("format"), str(args.ckpt))
    except ExportFormatError as e:
        raise CLIError(str(e)) from None
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model = exportable[export["type"]].from_config(export["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CLIError(f"{args.ckpt}: its export config does not describe a model ({e})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CLIError(f"{args.ckpt}: its weights do not fit its own export config "
                       f"({(str(e).strip().splitlines() or [''])[0]})") from None
    path = model.save_pretrained(args.out)
    print(f"exported step {checkpoint.get('global_step', '?')} of {args.ckpt} to {path}", file=sys.stderr)
    return 0
