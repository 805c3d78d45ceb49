from pathlib import Path

import pytest
import torch
from hypothesis import settings

from blt.entropy import EntropyModel, EntropyModelConfig

# The test models are tiny: intra-op threads only add synchronisation overhead, and on a shared
# 2-core machine OpenMP spin-waiting makes their small matmuls up to 100x slower.
torch.set_num_threads(1)

# A shared CI box can stall any single example: judge properties, not per-example wall time.
settings.register_profile("byte-lcm", deadline=None)
settings.load_profile("byte-lcm")

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or a clean skip where the folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def tiny_entropy_model_dir(tmp_path_factory) -> Path:
    """An exported EntropyModel with random weights: enough to exercise every code path."""
    torch.manual_seed(0)
    model = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=64))
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "entropy")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Downloads and caches go to a per-test directory, never to the user's."""
    monkeypatch.setenv("BLCM_HOME", str(tmp_path / "blcm-home"))
