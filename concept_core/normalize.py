"""Per-dimension scaling of concept vectors before the core sees them.

Diffusion assumes data of roughly unit variance per dimension (the noise is N(0, I)), so the LCM
fits a scaler on a sample of concepts and trains the core in the scaled space; predictions are
mapped back with ``denormalize``. The robust scaler (median, interquartile range) is the LCM's
choice: a few outlier concepts (boilerplate, very long units) barely move it.

Meta's LCM passes ``quantile_range=(0.25, 0.75)`` to sklearn's RobustScaler, which reads percents,
so it actually scaled by the 0.25th-0.75th percentile range; here the quartiles are the 25th and
75th percentiles, as intended.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

METHODS = ("robust", "standard", "identity")
# The interquartile range of a standard normal, 2·Φ⁻¹(0.75): dividing the IQR by it gives
# Gaussian data unit variance, like the standard scaler.
NORMAL_IQR = 1.3489795003921634


def quantiles(sample: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Per-column quantiles with linear interpolation (numpy's default): (n, d) -> (len(qs), d).

    torch.quantile refuses inputs above 16M elements; sorting once has no such limit."""
    n = sample.shape[0]
    ordered = sample.sort(dim=0).values  # (n, d)
    pos = torch.tensor(qs, dtype=sample.dtype, device=sample.device) * (n - 1)  # (Q,)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(n - 1)
    frac = (pos - lo)[:, None]  # (Q, 1)
    return ordered[lo] + frac * (ordered[hi] - ordered[lo])


class ConceptNormalizer(nn.Module):
    """x ↦ (x - center) / scale per dimension. Unfitted, every method is the identity (0 and 1).

    ``min_scale`` floors the scale: a dimension that is constant in the fitting sample (IQR or std 0)
    would otherwise divide by zero. With the floor, denormalizing a prediction keeps such a dimension
    pinned near its constant, which is what the sample said it is."""

    def __init__(self, dim: int, method: str = "robust", min_scale: float = 1e-5):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown normalization method {method!r}; expected one of {METHODS}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}")
        self.dim, self.method, self.min_scale = dim, method, min_scale
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, method={self.method!r}"

    @torch.no_grad()
    def fit(self, sample: torch.Tensor) -> ConceptNormalizer:
        """Fit center and scale on a (n, d) sample of concepts; returns self."""
        if sample.ndim != 2 or sample.shape[1] != self.dim:
            raise ValueError(f"fit expects a (n, {self.dim}) sample, got shape {tuple(sample.shape)}")
        if sample.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 rows to estimate a spread, got {sample.shape[0]}")
        if not torch.isfinite(sample).all():
            raise ValueError("the fitting sample contains NaN or inf")
        if self.method == "identity":
            return self
        x = sample.detach().double()  # float64: medians and spreads of large samples stay exact
        if self.method == "robust":
            q25, median, q75 = quantiles(x, (0.25, 0.5, 0.75))
            center, scale = median, (q75 - q25) / NORMAL_IQR
        else:
            # population std, as sklearn's StandardScaler
            center, scale = x.mean(0), x.std(0, correction=0)
        self.center.copy_(center)
        self.scale.copy_(scale.clamp_min(self.min_scale))
        return self

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected concepts of dimension {self.dim}, got shape {tuple(x.shape)}")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d) in the scaled space."""
        self._check(x)
        return (x - self.center.to(x.dtype)) / self.scale.to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) scaled -> (..., d) in the concept space."""
        self._check(x)
        return x * self.scale.to(x.dtype) + self.center.to(x.dtype)

    def save(self, path: str | Path) -> None:
        """Write center and scale as safetensors, with method, dim and min_scale as metadata."""
        tensors = {"center": self.center.detach().cpu().contiguous(), "scale": self.scale.detach().cpu().contiguous()}
        metadata = {"method": self.method, "dim": str(self.dim), "min_scale": repr(self.min_scale)}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> ConceptNormalizer:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            missing = {"method", "dim"} - metadata.keys()
            if missing or not {"center", "scale"} <= set(f.keys()):
                raise ValueError(f"{path} is not a saved ConceptNormalizer (needs center, scale, method and dim)")
            norm = cls(int(metadata["dim"]), metadata["method"], float(metadata.get("min_scale", 1e-5)))
            center, scale = f.get_tensor("center"), f.get_tensor("scale")
        if center.shape != (norm.dim,) or scale.shape != (norm.dim,):
            raise ValueError(f"{path}: center/scale shapes {tuple(center.shape)}/{tuple(scale.shape)} "
                             f"do not match dim {norm.dim}")
        norm.center.copy_(center)
        norm.scale.copy_(scale)
        return norm
