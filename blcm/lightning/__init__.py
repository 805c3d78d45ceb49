"""The LightningModules; only blcm imports Lightning, the models themselves live in blt/, concept_core/ and
blcm.model.

    byte_lcm.py    ByteLCMModule: a whole ByteLCM, by stages     optim.py     OptimConfig, AdamW + cosine
    entropy_lm.py  EntropyLMModule: the entropy model alone      config.py    the other setting groups
    renamed.py     errors for pre-group keys

What validation logs (its epoch sums and TensorBoard samples) lives with the rest of the evaluation, in
blcm.eval.validation.
"""

from blcm.lightning.byte_lcm import ByteLCMModule
from blcm.lightning.entropy_lm import EntropyLMModule

__all__ = ["ByteLCMModule", "EntropyLMModule"]
