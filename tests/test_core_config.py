"""Every LCM variant builds from a config; the paper-size reference config builds on the meta device."""

from pathlib import Path

import pytest
import torch

from concept_core.config import VARIANTS, build_core, load_config, main
from concept_core.interface import ConceptModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "core"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_builds_and_predicts(variant):
    model = build_core({"variant": variant, "model_dim": 16, "n_heads": 2}, 8)
    assert isinstance(model, ConceptModel)
    if variant == "quant":
        model.fit_quantizer(torch.randn(256, 8), generator=torch.Generator().manual_seed(0))
    concepts = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
    assert torch.isfinite(model.loss(concepts)).item()
    assert model.eval().predict_next(concepts).shape == (2, 8)


def test_paper_two_tower_builds_at_1_6b(capsys):
    config, concept_dim = load_config(CONFIGS / "two-tower-1.6b.yaml")
    assert concept_dim == 1024  # SONAR's
    model = build_core(config, concept_dim, device="meta")
    assert 1.5e9 < sum(p.numel() for p in model.parameters()) < 1.7e9
    assert main([str(CONFIGS / "two-tower-1.6b.yaml")]) == 0
    assert "1.63B" in capsys.readouterr().out


def test_tiny_config_builds():
    model = build_core(*load_config(CONFIGS / "two-tower-tiny.yaml"))
    assert model.concept_dim == 256


def test_bad_configs_are_clear():
    with pytest.raises(ValueError, match="unknown LCM variant"):
        build_core({"variant": "three_tower"}, 8)
    with pytest.raises(ValueError, match="no field"):
        build_core({"variant": "base", "n_layer": 3}, 8)
    with pytest.raises(ValueError, match="no field"):  # the concept space's size is not the core's to hold
        build_core({"variant": "base", "dim": 8}, 8)
    with pytest.raises(ValueError, match="concept_dim must be >= 1"):
        build_core({"variant": "base"}, 0)


def test_a_core_config_file_names_its_concept_dim(tmp_path):
    path = tmp_path / "core.yaml"
    path.write_text("variant: base\nmodel_dim: 16\n")
    with pytest.raises(ValueError, match="integer concept_dim"):
        load_config(path)
    path.write_text("variant: base\nmodel_dim: 16\nconcept_dim: 12\n")
    assert load_config(path) == ({"variant": "base", "model_dim": 16}, 12)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_loss_targets_route_gradients(variant):
    """loss(inputs, mask, targets): same values as loss(inputs), gradients reach only what is not detached."""
    torch.manual_seed(0)
    small = {"base": {"model_dim": 32, "n_layers": 1},
             "one_tower": {"model_dim": 32, "n_layers": 1},
             "two_tower": {"model_dim": 32, "context_layers": 1, "denoiser_layers": 1},
             "quant": {"model_dim": 32, "n_layers": 1, "num_codebooks": 2, "codebook_size": 4},
             "energy": {"model_dim": 32, "context_layers": 1, "head_layers": 1}}[variant]
    model = build_core({"variant": variant, **small}, 8).eval()
    if variant == "quant":
        model.fit_quantizer(torch.randn(64, 8))
    concepts = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)

    torch.manual_seed(1)
    plain = model.loss(concepts, mask)
    torch.manual_seed(1)
    routed = model.loss(concepts, mask, targets=concepts.detach())
    assert torch.allclose(plain, routed)

    # The last concept is only ever a target: detached, it gets no gradient; live, it does (except
    # through Quant's -d head, whose targets are discrete codes).
    (routed_grad,) = torch.autograd.grad(routed, concepts)
    assert routed_grad[:, -1].abs().sum() == 0
    if variant != "quant":
        (plain_grad,) = torch.autograd.grad(plain, concepts)
        assert plain_grad[:, -1].abs().sum() > 0
