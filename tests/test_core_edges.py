"""The five cores behave alike at the edges: a batch with no next-concept pair has loss 0 (with a
graph), padding (NaN included) never matters, and bad inputs raise ConceptInputError."""

from __future__ import annotations

import pytest
import torch
from core_synthetic import SyntheticConcepts
from torch import nn

from concept_core.config import build_core
from concept_core.interface import ConceptInputError, ConceptModel, Sampling

DIM = 16
SYNTHETIC = SyntheticConcepts(DIM)
VARIANTS = {
    "base": {"n_layers": 1},
    "one_tower": {"n_layers": 1},
    "two_tower": {"context_layers": 1, "denoiser_layers": 1},
    "quant": {"n_layers": 1, "codebook_size": 16},
    "energy": {"context_layers": 1, "head_layers": 1},
}
SAMPLING = Sampling(steps=3, temperature=0.0)


def core(variant: str) -> ConceptModel:
    """A tiny core of ``variant`` whose every part reads its inputs (open AdaLN gates, non-zero output layers:
    zero-initialised ones would hide a leak of padding into the outputs)."""
    torch.manual_seed(0)
    model = build_core({"variant": variant, "model_dim": 32, "max_positions": 64, **VARIANTS[variant]}, DIM)
    for name, p in model.named_parameters():
        if "modulation" in name or name.startswith(("out_", "null_context")):
            nn.init.normal_(p, std=0.2)
    if variant == "quant":
        sample, mask = SYNTHETIC.batch(256, 4, torch.Generator().manual_seed(1))
        model.fit_quantizer(sample[mask], generator=torch.Generator().manual_seed(2))
    return model


@pytest.fixture(params=list(VARIANTS))
def model(request) -> ConceptModel:
    return core(request.param)


@pytest.mark.parametrize("layout", ["one concept each", "ragged single concepts"])
def test_no_pairs_give_loss_zero_that_still_trains(model, layout):
    if layout == "one concept each":
        concepts, mask = torch.randn(2, 1, DIM), None
    else:  # three slots, one real concept per row, NaN on the padding
        concepts, mask = torch.full((2, 3, DIM), float("nan")), torch.zeros(2, 3, dtype=torch.bool)
        concepts[0, 0], concepts[1, 0] = torch.randn(2, DIM)
        mask[:, 0] = True
    loss = model.train().loss(concepts, mask)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and (g == 0).all() for g in grads)


@pytest.mark.parametrize("fill", [1e3, float("nan")])
def test_padding_is_ignored(model, fill):
    concepts, mask = SYNTHETIC.batch(2, 6, torch.Generator().manual_seed(0))
    mask[1, 3:] = False
    garbage = concepts.masked_fill(~mask[..., None], fill)
    model.train()  # CFG drops too: the same draws for both calls
    torch.manual_seed(1)
    clean = model.loss(concepts, mask)
    torch.manual_seed(1)
    assert torch.isfinite(clean) and torch.allclose(clean, model.loss(garbage, mask))
    model.eval()
    assert torch.allclose(model.predict_next(concepts, mask, SAMPLING, torch.Generator().manual_seed(0)),
                          model.predict_next(garbage, mask, SAMPLING, torch.Generator().manual_seed(0)))


def test_bad_inputs_raise(model):
    good = torch.randn(2, 3, DIM)
    nan = good.clone()
    nan[0, 1, 0] = float("nan")
    empty_row = torch.tensor([[True, True, True], [False, False, False]])
    bad_calls = {
        "wrong dim": lambda: model.loss(torch.randn(2, 3, DIM + 1)),
        "not 3-D": lambda: model.loss(torch.randn(3, DIM)),
        "NaN": lambda: model.loss(nan),
        "empty document": lambda: model.predict_next(good, empty_row),
        "mask dtype": lambda: model.loss(good, torch.ones(2, 3)),
        "too long": lambda: model.loss(torch.randn(1, 65, DIM)),
        "not left-aligned": lambda: model.start(good, torch.tensor([[True, True, False]] * 2)),
        "extend shape": lambda: model.extend(model.start(good, torch.ones(2, 3, dtype=torch.bool)), good[:1, 0]),
        "extend NaN": lambda: model.extend(model.start(good, torch.ones(2, 3, dtype=torch.bool)), nan[:, 1]),
        "extend too long": lambda: model.extend(model.start(torch.randn(1, 64, DIM), None), good[:1, 0]),
    }
    for name, call in bad_calls.items():
        try:
            call()
        except ConceptInputError:
            continue
        pytest.fail(f"{name}: no ConceptInputError")
