"""On a GPU, every attention backend agrees with sdpa for every mask byte-lcm uses.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest tests/test_backends_cuda.py`.
"""

import pytest
import torch

from primitives.attention import AttentionMask, _xformers_available, attend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def masks(batch: int, q_len: int, kv_len: int, device) -> dict[str, AttentionMask]:
    g = torch.Generator(device="cpu").manual_seed(0)
    units = torch.randint(0, 4, (batch, kv_len), generator=g).sort(dim=1).values  # packed unit ids
    units[:, -5:] = -1  # padding
    patches = torch.randint(0, 3, (batch, kv_len), generator=g).cumsum(1) // 3
    q_patches = torch.arange(q_len).expand(batch, -1) // 2
    return {
        "causal": AttentionMask(causal=True),
        "window": AttentionMask(causal=True, window=16),
        "causal_within_unit": AttentionMask(units.to(device), units.to(device), causal=True),
        "patch_cross": AttentionMask(q_patches.to(device), patches.to(device)),
        "none": None,
    }


@pytest.mark.parametrize("backend", ["flex", "xformers"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backends_match_sdpa_on_cuda(backend, dtype):
    if backend == "xformers" and not _xformers_available():
        pytest.skip("xformers not installed")
    torch.manual_seed(0)
    batch, heads, length, dim = 2, 4, 128, 32
    q, k, v = (torch.randn(batch, heads, length, dim, device="cuda", dtype=dtype) for _ in range(3))
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-4, rtol=1e-4)
    for name, mask in masks(batch, length, length, "cuda").items():
        expected = attend(q, k, v, mask, backend="sdpa")
        got = attend(q, k, v, mask, backend=backend)
        torch.testing.assert_close(got, expected, **tol, msg=lambda m, name=name: f"{name}: {m}")


def test_auto_picks_xformers_when_installed():
    from primitives.attention import resolve_backend

    assert resolve_backend("auto", torch.device("cuda")) == ("xformers" if _xformers_available() else "sdpa")
