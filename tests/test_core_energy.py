"""The energy LCM (CALM's energy head on the contextualizer): the energy score itself, and a head that learns a
context-dependent, two-mode next concept in one pass where MSE regression can only give the mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from concept_core.base import BaseLCM, BaseLCMConfig
from concept_core.energy import EnergyLCM, EnergyLCMConfig, energy_score

DIM = 8


def brute_force_energy_score(samples: torch.Tensor, target: torch.Tensor) -> float:
    n = len(samples)
    fit = sum((x - target).norm() for x in samples) / n
    spread = sum((samples[i] - samples[j]).norm() for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return float(fit - 0.5 * spread)


def test_energy_score_is_the_formula():
    g = torch.Generator().manual_seed(0)
    samples, target = torch.randn(3, 5, DIM, generator=g), torch.randn(3, DIM, generator=g)
    scores = energy_score(samples, target)
    assert scores.shape == (3,)
    for row in range(3):
        assert scores[row].item() == pytest.approx(brute_force_energy_score(samples[row], target[row]), abs=1e-4)


def test_energy_score_prefers_the_true_spread_over_its_mean():
    """Propriety: observations from a two-point distribution score better (lower) against draws from that
    distribution than against draws all at its mean, which is what MSE would pick."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(DIM, generator=g)
    signs = lambda n: (torch.randint(0, 2, (n, 1), generator=g) * 2 - 1).float()  # noqa: E731
    observed = signs(512) * a  # (512, d)
    spread_draws = (signs(512 * 8) * a).view(512, 8, DIM)
    mean_draws = torch.zeros(512, 8, DIM)
    assert energy_score(spread_draws, observed).mean() < energy_score(mean_draws, observed).mean() - 0.1 * a.norm()


def two_mode_documents(n: int, a: torch.Tensor, b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Two-concept documents: after +b the next concept is +a or -a (a coin), after -b it is always b."""
    first = (torch.randint(0, 2, (n, 1), generator=g) * 2 - 1).float()  # +1 or -1
    coin = (torch.randint(0, 2, (n, 1), generator=g) * 2 - 1).float()
    second = torch.where(first > 0, coin * a, b)
    return torch.stack([first * b, second], dim=1)  # (n, 2, d)


def trained(model, a, b, steps: int = 400):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = model.loss(two_mode_documents(64, a, b, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


def test_energy_head_learns_both_modes_and_follows_its_context():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(DIM, generator=g), torch.randn(DIM, generator=g)
    torch.manual_seed(0)
    energy, losses = trained(EnergyLCM(EnergyLCMConfig(model_dim=32, context_layers=1, head_layers=2, n_heads=2),
                                                 DIM), a, b)
    assert sum(losses[-50:]) / 50 < 0.7 * sum(losses[:10]) / 10
    torch.manual_seed(0)
    base, _ = trained(BaseLCM(BaseLCMConfig(model_dim=32, n_layers=1, n_heads=2), DIM), a, b)

    after_plus = (+b).expand(400, 1, DIM)
    draws = energy.predict_next(after_plus, generator=torch.Generator().manual_seed(2))  # (400, d)
    cos = F.cosine_similarity(draws, a[None], dim=-1)
    assert 0.25 < (cos > 0.9).float().mean() < 0.75 and 0.25 < (cos < -0.9).float().mean() < 0.75
    assert (cos.abs() > 0.9).float().mean() > 0.9  # the draws are the modes, not points between them
    regressed = base.predict_next(after_plus[:1])
    assert regressed.norm() < 0.5 * a.norm()  # MSE's answer: the mean of +a and -a, near zero

    after_minus = (-b).expand(100, 1, DIM)
    fixed = energy.predict_next(after_minus, generator=torch.Generator().manual_seed(3))
    assert (F.cosine_similarity(fixed, b[None], dim=-1) > 0.9).float().mean() > 0.9


def test_sampling_is_seeded_and_one_draw_per_row():
    model = EnergyLCM(EnergyLCMConfig(model_dim=16, context_layers=1, head_layers=1, n_heads=2), DIM).eval()
    context = torch.randn(3, 4, DIM)
    first = model.predict_next(context, generator=torch.Generator().manual_seed(0))
    assert first.shape == (3, DIM)
    assert torch.equal(first, model.predict_next(context, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(first, model.predict_next(context, generator=torch.Generator().manual_seed(1)))


def test_one_sample_per_position_is_refused():
    with pytest.raises(ValueError, match="at least 2 samples"):
        EnergyLCMConfig(samples=1)
