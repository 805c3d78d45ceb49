"""Noise schedules: ᾱ_t, the share of signal variance left at timestep t, for t = 0 … T-1.

x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·ε. Every schedule here gives a strictly decreasing ᾱ in (0, 1];
with ``zero_terminal_snr`` the last one is exactly 0, so the last training timestep is pure noise and
matches what sampling starts from (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
Steps are Flawed"). The LCM uses the cosine schedule rescaled that way.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "sigmoid", "linear", "quadratic")
# Betas of 1 would zero ᾱ for good and make every later step undefined; Nichol & Dhariwal cap them.
MAX_BETA = 0.999


def betas_for_alpha_bar(alpha_bar_at: torch.Tensor) -> torch.Tensor:
    """Discretise a continuous ᾱ(t) sampled at t = 0, 1/T, …, 1 ((T+1,)) into T betas, capped at MAX_BETA."""
    return (1 - alpha_bar_at[1:] / alpha_bar_at[:-1]).clamp_max(MAX_BETA)


def make_alphas_cumprod(schedule: str, num_train_timesteps: int, *, sigmoid_alpha: float = 1.5,
                        sigmoid_beta: float = 0.0, beta_start: float = 1e-4, beta_end: float = 0.02,
                        zero_terminal_snr: bool = False) -> torch.Tensor:
    """ᾱ_t for t = 0 … T-1: (T,) float64.

    - "cosine" (Nichol & Dhariwal 2021): ᾱ(t) = cos²((t + s)/(1 + s)·π/2), s = 0.008.
    - "sigmoid" (the LCM paper's Sigmoid(α, β), Eq. 14, as Meta's reference implements it): a
      schedule on the log signal-to-noise ratio,
          log SNR(t) = β - α·log(t / (1 - t)),   ᾱ(t) = sigmoid(log SNR(t)),
      so ᾱ(0) = 1, ᾱ(1) = 0 and ᾱ(1/2) = sigmoid(β). α > 0 sets how steeply the SNR falls around the
      middle of the chain; β shifts the whole curve towards more signal (β > 0) or more noise (β < 0).
    - "linear" (DDPM): betas linear from ``beta_start`` to ``beta_end``.
    - "quadratic": sqrt(beta) linear, then squared (diffusers' "scaled_linear").

    Cosine and sigmoid are continuous ᾱ(t) on t ∈ [0, 1], discretised as β_i = 1 - ᾱ((i+1)/T)/ᾱ(i/T)
    capped at 0.999, then ᾱ_t = ∏_{i≤t}(1 - β_i).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {schedule!r}; expected one of {SCHEDULES}")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    t = torch.linspace(0, 1, num_train_timesteps + 1, dtype=torch.float64)  # (T+1,)
    if schedule == "cosine":
        s = 0.008
        betas = betas_for_alpha_bar(torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2)
    elif schedule == "sigmoid":
        if not sigmoid_alpha > 0:
            raise ValueError(f"sigmoid_alpha must be positive for ᾱ to decrease, got {sigmoid_alpha}")
        # logit(0) = -inf and logit(1) = +inf give ᾱ(0) = 1 and ᾱ(1) = 0 exactly, with no clamping.
        betas = betas_for_alpha_bar(torch.sigmoid(sigmoid_beta - sigmoid_alpha * torch.logit(t)))
    else:
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        else:
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    return rescale_zero_terminal_snr(alphas_cumprod) if zero_terminal_snr else alphas_cumprod


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(ᾱ) so the last value is exactly 0 and the first is unchanged
    (Lin et al. 2023, Algorithm 1): (T,) -> (T,) float64. An affine map with a positive slope keeps ᾱ
    strictly decreasing."""
    alphas_cumprod = alphas_cumprod.double()
    root = alphas_cumprod.sqrt()
    first, last = root[0], root[-1]
    if not first > last:
        raise ValueError("ᾱ must decrease from the first timestep to the last to rescale it")
    rescaled = ((root - last) * (first / (first - last))) ** 2  # the last is (last - last)² = 0 exactly
    rescaled[0] = alphas_cumprod[0]  # sqrt, scale and square can land an ulp off; keep the first exactly
    return rescaled
