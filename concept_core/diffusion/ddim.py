"""Deterministic DDIM sampling (Song et al. 2021, eta = 0), shaped like diffusers' DDIMScheduler.

The LCM's Two-Tower model predicts x0 ("sample"); epsilon and v prediction are here for comparison.
Every prediction type is converted to the pair (x0, ε) at timestep t, and one step moves to the
previous scheduled timestep:

    x_prev = sqrt(ᾱ_prev)·x0 + sqrt(1 - ᾱ_prev)·ε

with ᾱ_prev = 1 after the last scheduled timestep, so the chain ends at x0 itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from concept_core.diffusion.schedules import make_alphas_cumprod

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x at the previous scheduled timestep (x0 after the last step)
    pred_original_sample: torch.Tensor  # the step's x0 estimate, after clipping


class DDIMScheduler:
    def __init__(self, num_train_timesteps: int = 100, schedule: str = "cosine", zero_terminal_snr: bool = True,
                 prediction_type: str = "sample", clip_sample: float | None = None, sigmoid_alpha: float = 1.5,
                 sigmoid_beta: float = 0.0, beta_start: float = 1e-4, beta_end: float = 0.02):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        if clip_sample is not None and not clip_sample > 0:
            raise ValueError(f"clip_sample must be positive or None, got {clip_sample}")
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.alphas_cumprod = make_alphas_cumprod(
            schedule, num_train_timesteps, sigmoid_alpha=sigmoid_alpha, sigmoid_beta=sigmoid_beta,
            beta_start=beta_start, beta_end=beta_end, zero_terminal_snr=zero_terminal_snr).float()  # (T,)
        # float32 must still tell the timesteps apart, and ᾱ_0 < 1 keeps 1 - ᾱ_t > 0 for every t (the
        # x0 -> ε conversion divides by it).
        if not (self.alphas_cumprod[0] < 1 and (self.alphas_cumprod.diff() < 0).all()):
            raise ValueError("this schedule is not strictly decreasing below 1 in float32; "
                             "use fewer timesteps or a larger beta_start")
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Pick S of the T training timesteps, "trailing" spacing (Lin et al. 2023, Table 2):
        round(T - i·T/S) - 1 for i = 0 … S-1, so sampling starts at T-1, the pure-noise end under
        zero terminal SNR. Rounds half up: consecutive values differ by T/S ≥ 1, so they stay unique."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.num_train_timesteps}], "
                             f"got {num_inference_steps}")
        steps = torch.arange(num_inference_steps, 0, -1, dtype=torch.float64)  # S … 1
        self.timesteps = torch.floor(steps * self.num_train_timesteps / num_inference_steps + 0.5).long() - 1
        self.num_inference_steps = num_inference_steps

    def alpha_bar(self, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t shaped to broadcast over ``like``: t (B,) against like (B, …) gives (B, 1, …, 1).
        At least float32, since in bf16 ᾱ close to 1 rounds to 1 and the noise level to 0."""
        dtype = torch.promote_types(like.dtype, torch.float32)
        if not torch.is_tensor(t):
            if not 0 <= int(t) < self.num_train_timesteps:
                raise ValueError(f"timestep {t} is outside [0, {self.num_train_timesteps})")
            return self.alphas_cumprod[int(t)].to(like.device, dtype)
        if t.ndim > like.ndim:
            raise ValueError(f"timesteps of shape {tuple(t.shape)} cannot broadcast over {tuple(like.shape)}")
        a = self.alphas_cumprod.to(like.device)[t.to(like.device, torch.long)].to(dtype)
        return a.reshape(*t.shape, *(1,) * (like.ndim - t.ndim))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·ε."""
        a = self.alpha_bar(t, x0)
        return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(x0.dtype)

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """v = sqrt(ᾱ_t)·ε - sqrt(1 - ᾱ_t)·x0 (Salimans & Ho 2022)."""
        a = self.alpha_bar(t, x0)
        return (a.sqrt() * noise - (1 - a).sqrt() * x0).to(x0.dtype)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """What the model should output at x_t = add_noise(x0, noise, t) for this prediction type."""
        if self.prediction_type == "sample":
            return x0
        if self.prediction_type == "epsilon":
            return noise
        return self.get_velocity(x0, noise, t)

    def to_x0_eps(self, model_output: torch.Tensor, t: int | torch.Tensor,
                  sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a model output at x_t = ``sample`` into (x0, ε) estimates.

        x0 and v predictions never divide by sqrt(ᾱ_t), so they are exact at ᾱ_t = 0. An ε
        prediction says nothing about x0 where ᾱ_t = 0 (x_t is pure noise); x0 is 0 there, the mean of
        normalized concepts, rather than 0/0. That is why ε prediction wants more than one sampling
        step under zero terminal SNR (Lin et al. recommend v prediction there)."""
        a = self.alpha_bar(t, sample)
        root_a, root_1ma = a.sqrt(), (1 - a).sqrt()
        if self.prediction_type == "sample":
            x0 = model_output
            eps = (sample - root_a * x0) / root_1ma
        elif self.prediction_type == "epsilon":
            eps = model_output
            x0 = (sample - root_1ma * eps) / root_a.clamp_min(torch.finfo(a.dtype).tiny)
            x0 = torch.where(root_a > 0, x0, torch.zeros_like(x0))
        else:
            x0 = root_a * sample - root_1ma * model_output
            eps = root_a * model_output + root_1ma * sample
        return x0.to(sample.dtype), eps.to(sample.dtype)

    def from_epsilon(self, eps: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """The inverse of ``to_x0_eps``: an ε estimate at x_t = ``sample`` as this prediction type's output.
        Needs ᾱ_t > 0 for x0 and v prediction (x0 is undetermined by ε where ᾱ_t = 0)."""
        if self.prediction_type == "epsilon":
            return eps
        a = self.alpha_bar(t, sample)
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        out = x0 if self.prediction_type == "sample" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.to(sample.dtype)

    def previous_timestep(self, t: int) -> int:
        """The scheduled timestep after t in sampling order, or -1 after the last."""
        if self.timesteps is None:
            raise ValueError("call set_timesteps before sampling")
        earlier = self.timesteps[self.timesteps < t]
        return int(earlier.max()) if len(earlier) else -1

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, sample: torch.Tensor,
             epsilon_scaling: float | None = None) -> StepOutput:
        """One deterministic DDIM step from x_t = ``sample`` to the previous scheduled timestep.

        ``epsilon_scaling`` divides the ε estimate (not x0) by the factor, countering the exposure bias
        of sampling (Ning et al. 2023, "Elucidating the Exposure Bias in Diffusion Models"); the LCM
        uses 1.00045. ``clip_sample`` clamps the x0 estimate; ε is kept as predicted, as in diffusers."""
        t = int(t)
        prev_t = self.previous_timestep(t)
        x0, eps = self.to_x0_eps(model_output, t, sample)
        if epsilon_scaling is not None:
            eps = eps / epsilon_scaling
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        a_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
        prev = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        return StepOutput(prev_sample=prev, pred_original_sample=x0)

    def init_noise(self, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                   scale: float = 1.0, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
        """x_T ~ N(0, scale²·I). The LCM starts inference from scale 0.6: less initial noise, a more
        conservative sample. Drawn on the generator's device so a seeded CPU generator works for GPU runs."""
        noise = torch.randn(tuple(shape), generator=generator, dtype=dtype,
                            device=generator.device if generator is not None else device)
        return scale * noise.to(device=device)


def classifier_free_guidance(scheduler: DDIMScheduler, cond: torch.Tensor, uncond: torch.Tensor,
                             t: int | torch.Tensor, sample: torch.Tensor, scale: float,
                             rescale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) with guidance rescale (Lin et al. 2023, Algorithm 2),
    as Meta's LCM applies them: in ε space, per vector (the last dim).

    cond, uncond: model outputs at x_t = ``sample`` in the scheduler's prediction type, (..., d).
    ε = ε_u + scale·(ε_c - ε_u); with ``rescale`` = φ, ε ← φ·ε·std(ε_c)/std(ε) + (1 - φ)·ε, which pulls
    the guided prediction's spread back to the conditional one's. Returns the result in the
    scheduler's prediction type, ready for ``step``.

    Where ᾱ_t = 0 (the first step under zero terminal SNR) an ε estimate cannot be turned back into
    x0, so cond is returned unchanged there, as in the reference; scale 1 also returns cond exactly."""
    if not 0 <= rescale <= 1:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    if scale == 1 or scheduler.alpha_bar(int(t), sample) == 0:
        return cond
    _, eps_cond = scheduler.to_x0_eps(cond, t, sample)
    _, eps_uncond = scheduler.to_x0_eps(uncond, t, sample)
    eps = eps_uncond + scale * (eps_cond - eps_uncond)  # (..., d)
    if rescale > 0:
        # population std: the ratio is the same as with Bessel's correction and stays defined for d = 1
        std_cond, std_guided = eps_cond.std(-1, correction=0, keepdim=True), eps.std(-1, correction=0, keepdim=True)
        ratio = torch.where(std_guided > 0, std_cond / std_guided, torch.ones_like(std_guided))
        eps = rescale * ratio * eps + (1 - rescale) * eps
    return scheduler.from_epsilon(eps, t, sample)
