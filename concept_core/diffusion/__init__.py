"""Diffusion for concept vectors: noise schedules and a DDIM sampler with classifier-free guidance."""

from concept_core.diffusion.ddim import PREDICTION_TYPES, DDIMScheduler, StepOutput, classifier_free_guidance
from concept_core.diffusion.schedules import SCHEDULES, make_alphas_cumprod, rescale_zero_terminal_snr

__all__ = [
    "PREDICTION_TYPES",
    "SCHEDULES",
    "DDIMScheduler",
    "StepOutput",
    "classifier_free_guidance",
    "make_alphas_cumprod",
    "rescale_zero_terminal_snr",
]
