"""What `blcm eval` measures on: EvalSettings, whose fields also make the command's flags (blcm.commands.eval).

A field's ``help`` metadata is its flag's help text (``{default}`` filled in), ``parts`` gives a flag of its own to
each part of a nested setting (a Sampling's steps, the byte LM segmenter's cap) and any other metadata (``metavar``)
goes to argparse as it is. An ``int | None`` field takes 0 on the command line for None (all).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from concept_core.interface import Sampling


def setting(default: Any = None, help: str = "", factory: Callable[[], Any] | None = None, **flag: Any) -> Any:
    """A field of EvalSettings with the help text (and argparse options) of its `blcm eval` flag."""
    metadata = {"help": help, **flag}
    return field(default_factory=factory, metadata=metadata) if factory else field(default=default, metadata=metadata)


@dataclass
class EvalSettings:
    max_docs: int | None = setting(64, "N documents, taken in turn from each source (default {default}; 0 = all)")
    window: int = setting(16, "units kept per document (default {default}, tiny's window)")
    noise: tuple[float, ...] = setting(help="concept noise levels σ for reconstruction (default {default})",
                                       factory=lambda: (0.0, 0.1, 0.2, 0.5), metavar="SIGMA")
    prompt_units: int = setting(4, "generation: units of each document given (default {default})")
    continuation_units: int = setting(4, "generation: units generated and compared (default {default}; a byte LM "
                                      "generates as many bytes as the true ones)")
    generation_docs: int = setting(16, "documents continued (default {default})")
    reencode: bool = setting(False, "generation: decode and re-encode every unit before the next concept (default: "
                             "plan the continuation's concepts, then decode them in one pass)")
    sampling: Sampling = setting(factory=lambda: Sampling(steps=20, guidance_scale=1.0), parts={
        "steps": ("--steps", "diffusion sampling steps (default {default})"),
        "guidance_scale": ("--guidance", "classifier-free guidance scale (1 = off; default {default})")})
    temperature: float = setting(0.0, "byte sampling temperature of both decoders (default {default}: greedy)")
    seed: int = setting(0, "random seed (default {default})")
    parallel_max: int | None = setting(None, "the first N parallel records (default {default} = all)")
    mi_predictions: int = setting(128, "MI on the first N predictions (default {default}; each is a byte LM pass "
                                  "over its context)")
    mi_context: int = setting(512, "MI: bytes of context kept, the last N of the units before (default {default})")
    pair_units: int | None = setting(64, "retrieval: a file's concept is the mean of its first N units (default "
                                     "{default} = 8 KB at 128-byte units; 0 = all)")
    # A byte LM has no segmenter of its own: it is scored on the units of the ByteLCM it is compared with.
    baseline_segmenter: dict = setting(factory=lambda: {"kind": "sentence", "max_bytes": 128}, parts={
        "max_bytes": ("--unit-bytes", "a byte LM: the sentence cap of the units it is scored on; match the ByteLCM "
                      "it is compared with (default {default}, configs/tiny.yaml's)")})

    def __post_init__(self) -> None:
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs must be >= 1, got {self.max_docs}")
        if self.window < 2:
            raise ValueError(f"window must be >= 2 units (a context and a next unit), got {self.window}")
        if self.prompt_units < 1 or self.continuation_units < 1 or self.generation_docs < 0:
            raise ValueError("prompt_units and continuation_units must be >= 1 and generation_docs >= 0")
        if self.mi_predictions < 0 or self.mi_context < 1:
            raise ValueError("mi_predictions must be >= 0 and mi_context >= 1")
        if self.pair_units is not None and self.pair_units < 1:
            raise ValueError(f"pair_units must be >= 1 (or None: all), got {self.pair_units}")
        if self.parallel_max is not None and self.parallel_max < 1:
            raise ValueError(f"parallel_max must be >= 1 (or None: all), got {self.parallel_max}")
        if any(s < 0 or not math.isfinite(s) for s in self.noise):
            raise ValueError(f"noise levels must be finite and >= 0, got {list(self.noise)}")
