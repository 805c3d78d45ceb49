"""What the commands read: an exported model, a file's bytes; bad input is a CLIError (one line, exit status 2)."""

from __future__ import annotations

from pathlib import Path

from blcm import CLIError


def load_model(directory: str | None, byte_lm: bool = False, part: str | None = None, decoder: str | None = None,
               ignore_meaning: bool = False):
    """The ByteLCM exported to ``directory``; with ``byte_lm``, an exported EntropyModel (a byte LM such as
    the ByteGPT baseline) is accepted too. None: a shipped codec in a ByteLCM whose core is untrained (what
    encode, decode and reconstruct need), ``part`` "spelling" (the chunk codec, the default) or "meaning".
    ``decoder``: a meaning-codec export whose decoder the model writes with (``ByteLCM.use_meaning_decoder``);
    ``ignore_meaning``: the meaning decoder writes from the zero meaning (``MeaningCodecConfig.ignore_meaning``)."""
    model = _load(directory, byte_lm, part)
    if decoder is None and not ignore_meaning:
        return model
    from blcm.model import ByteLCM
    from blt.pretrained import PretrainedError
    from bridges.meaning_codec import MeaningCodec
    from bridges.pretrained.meaning import load_meaning_codec

    if not isinstance(model, ByteLCM) or not isinstance(model.codec, MeaningCodec):
        raise CLIError(f"--decoder and --ignore-meaning apply to a ByteLCM on the meaning space; {directory} is not")
    if decoder is not None:
        try:
            model.use_meaning_decoder(load_meaning_codec(decoder))
        except (PretrainedError, FileNotFoundError, ValueError) as e:
            raise CLIError(f"--decoder {decoder}: {(str(e).strip().splitlines() or [''])[0]}") from None
    model.set_meaning_decoding(ignore_meaning=ignore_meaning)
    return model


def _load(directory: str | None, byte_lm: bool, part: str | None):
    from safetensors import SafetensorError

    from blcm.model import ByteLCM
    from blt.entropy import EXPORT_KIND, EntropyModel
    from blt.pretrained import PretrainedError
    from primitives.export import export_type

    if directory is None:
        try:
            return ByteLCM.with_codec(part=part or "spelling")
        except PretrainedError as e:
            raise CLIError(str(e)) from None
    if part is not None:
        raise CLIError(f"--part picks a shipped codec; with --model {directory} the model's own codec is used: "
                       "give one or the other")

    # Anything but an EntropyModel export is tried as a ByteLCM: from_pretrained says what is wrong with it.
    cls = EntropyModel if byte_lm and export_type(directory) == EXPORT_KIND else ByteLCM
    try:
        return cls.from_pretrained(directory)
    except (FileNotFoundError, ValueError, TypeError, RuntimeError, SafetensorError) as e:
        reason = (str(e).strip().splitlines() or [""])[0]  # load_state_dict lists every mismatched key
        what = "ByteLCM or byte LM" if byte_lm else "ByteLCM"
        raise CLIError(f"cannot load a {what} from {directory}: {reason}") from None


def read_bytes(path: str) -> bytes:
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{path} is a directory; give a file")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror or e})") from None
