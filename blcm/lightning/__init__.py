"""The LightningModules (the map: README.md, *The layout*); only blcm imports Lightning, the models themselves
live in blt/, concept_core/ and blcm.model. The modules are imported when first named (configs name them as
``blcm.lightning.ByteLCMModule``), so importing one of this package's modules loads only what it needs. What
validation logs lives with the rest of the evaluation, in blcm.eval.validation."""

from importlib import import_module

MODULES = {"ByteLCMModule": "blcm.lightning.byte_lcm", "EntropyLMModule": "blcm.lightning.entropy_lm"}
__all__ = list(MODULES)


def __getattr__(name: str):
    if name not in MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(MODULES[name]), name)
