"""`blcm export`: a training checkpoint -> an exported model directory (config.json + model.safetensors)."""

from __future__ import annotations

import sys

from blcm.errors import CLIError


def cmd_export(args) -> int:
    """A training checkpoint (.ckpt) -> an exported model directory (config.json + model.safetensors)."""
    import torch

    try:
        checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CLIError(f"{args.ckpt}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        reason = (str(e).strip().splitlines() or [""])[0]  # torch's unpickling errors run to many lines
        raise CLIError(f"{args.ckpt} is not a readable Lightning checkpoint ({type(e).__name__}: {reason})") from None
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CLIError(f"{args.ckpt} has no hyper-parameters or state dict: not a byte-lcm checkpoint")
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        if "encoder" in hparams and "core" in hparams:
            from blcm.model import ByteLCM, ByteLCMConfig

            model = ByteLCM(ByteLCMConfig.from_dict({k: hparams[k] for k in ("segmenter", "codec", "encoder",
                                                                              "decoder", "core") if k in hparams}))
        elif "context" in hparams:
            from blt.entropy import EntropyModel, EntropyModelConfig

            model = EntropyModel(EntropyModelConfig(**{k: hparams[k] for k in ("dim", "n_layers", "n_heads",
                                                                               "context", "window", "backend")}))
        else:
            raise CLIError(f"{args.ckpt} is neither a ByteLCMModule nor an EntropyLMModule checkpoint")
    except (KeyError, TypeError, ValueError) as e:
        raise CLIError(f"{args.ckpt}: its hyper-parameters do not describe a model ({e})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CLIError(f"{args.ckpt}: its weights do not fit its own hyper-parameters "
                       f"({(str(e).strip().splitlines() or [''])[0]})") from None
    path = model.save_pretrained(args.out)
    print(f"exported step {checkpoint.get('global_step', '?')} of {args.ckpt} to {path}", file=sys.stderr)
    return 0
