from statistics import NormalDist

import pytest
import torch

from concept_core.normalize import NORMAL_IQR, ConceptNormalizer, quantiles

DIM = 6
SHIFT = torch.tensor([0.0, 5.0, -3.0, 100.0, 0.5, -0.02])
SPREAD = torch.tensor([1.0, 0.1, 4.0, 20.0, 0.01, 2.5])


def gaussian(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g) * SPREAD + SHIFT


def with_outliers(x: torch.Tensor, share: float = 0.05, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(x), generator=g)[: int(share * len(x))]
    x = x.clone()
    x[rows] = 1e4 * SPREAD + SHIFT  # huge, all on one side: drags a mean and std far off
    return x


def test_normal_iqr_constant():
    z = NormalDist()
    assert z.inv_cdf(0.75) - z.inv_cdf(0.25) == pytest.approx(NORMAL_IQR, rel=1e-12)


def test_quantiles_match_torch():
    x = torch.randn(101, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    qs = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    expected = torch.quantile(x, torch.tensor(qs, dtype=torch.float64), dim=0)
    torch.testing.assert_close(quantiles(x, qs), expected)


@pytest.mark.parametrize("method", ["robust", "standard"])
def test_gaussian_data_gets_zero_center_and_unit_spread(method):
    x = gaussian()
    z = ConceptNormalizer(DIM, method).fit(x).normalize(x)
    torch.testing.assert_close(z.median(0).values, torch.zeros(DIM), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(DIM), atol=0.03, rtol=0)


def test_robust_ignores_outliers_standard_does_not():
    clean = gaussian()
    dirty = with_outliers(clean)
    robust = ConceptNormalizer(DIM, "robust").fit(dirty)
    standard = ConceptNormalizer(DIM, "standard").fit(dirty)
    # judged on the clean data: the robust fit still centres and scales it, the standard one does not
    z = robust.normalize(clean)
    assert z.median(0).values.abs().max() < 0.15
    assert ((z.std(0) - 1).abs() < 0.15).all()
    z = standard.normalize(clean)
    assert (z.std(0) < 0.05).all()  # the outliers inflated the std by more than 20x
    assert (robust.scale / SPREAD - 1).abs().max() < 0.15
    assert (standard.scale / SPREAD).min() > 20


@pytest.mark.parametrize("method", ["robust", "standard", "identity"])
def test_round_trip(method):
    x = gaussian(500)
    norm = ConceptNormalizer(DIM, method).fit(x)
    y = gaussian(64, seed=3).reshape(4, 16, DIM)  # any leading shape
    torch.testing.assert_close(norm.denormalize(norm.normalize(y)), y, rtol=1e-5, atol=1e-4)


def test_identity_is_identity():
    x = gaussian(100)
    norm = ConceptNormalizer(DIM, "identity").fit(x)
    assert torch.equal(norm.normalize(x), x)
    assert torch.equal(norm.denormalize(x), x)
    assert torch.equal(norm.center, torch.zeros(DIM)) and torch.equal(norm.scale, torch.ones(DIM))


def test_unfitted_is_identity():
    x = gaussian(10)
    norm = ConceptNormalizer(DIM)
    assert torch.equal(norm.normalize(x), x)


def test_constant_dimension_gets_a_floor():
    x = gaussian(200)
    x[:, 2] = 7.0
    norm = ConceptNormalizer(DIM, "robust").fit(x)
    assert norm.scale[2] == pytest.approx(norm.min_scale)
    z = norm.normalize(x)
    assert torch.isfinite(z).all()
    assert torch.equal(z[:, 2], torch.zeros(200))
    torch.testing.assert_close(norm.denormalize(z)[:, 2], x[:, 2])


@pytest.mark.parametrize("method", ["robust", "standard", "identity"])
def test_save_load_round_trip(tmp_path, method):
    norm = ConceptNormalizer(DIM, method, min_scale=1e-3).fit(gaussian(300))
    path = tmp_path / "normalizer.safetensors"
    norm.save(path)
    loaded = ConceptNormalizer.load(path)
    assert (loaded.method, loaded.dim, loaded.min_scale) == (method, DIM, 1e-3)
    assert torch.equal(loaded.center, norm.center) and torch.equal(loaded.scale, norm.scale)
    x = gaussian(8, seed=5)
    assert torch.equal(loaded.normalize(x), norm.normalize(x))


def test_save_before_fit_loads_as_identity(tmp_path):
    path = tmp_path / "n.safetensors"
    ConceptNormalizer(DIM).save(path)
    x = gaussian(4)
    assert torch.equal(ConceptNormalizer.load(path).normalize(x), x)


def test_state_dict_carries_the_fit():
    norm = ConceptNormalizer(DIM).fit(gaussian(300))
    other = ConceptNormalizer(DIM)
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other.center, norm.center)


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not a saved ConceptNormalizer"):
        ConceptNormalizer.load(path)


def test_errors():
    with pytest.raises(ValueError, match="unknown normalization method"):
        ConceptNormalizer(DIM, "minmax")
    norm = ConceptNormalizer(DIM)
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        norm.fit(torch.randn(10, DIM + 1))
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        norm.fit(torch.randn(10))
    with pytest.raises(ValueError, match="at least 2 rows"):
        norm.fit(torch.randn(1, DIM))
    bad = torch.randn(10, DIM)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        norm.fit(bad)
    with pytest.raises(ValueError, match="dimension 6"):
        norm.normalize(torch.randn(2, DIM - 1))
    with pytest.raises(ValueError, match="dimension 6"):
        norm.denormalize(torch.randn(2, DIM + 1))
