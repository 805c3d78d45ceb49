"""The built sdist and wheel carry the shipped entropy model and chunk codec: installed from either, both load
verified."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FILES = {"blt/pretrained/entropy-bytes": ("config.json", "model.safetensors", "thresholds.json"),
                 "bridges/pretrained/chunk-codec": ("config.json", "model.safetensors"),
                 "bridges/pretrained/meaning-codec": ("config.json", "model.safetensors")}


def build(kind: str, out: Path, source: Path = REPO) -> Path:
    """A PEP 517 sdist or wheel of ``source`` (the setuptools this venv has: no download, no isolation)."""
    code = (f"import sys; from setuptools import build_meta as b; "
            f"print(b.build_{kind}({str(out)!r}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=source, check=True, capture_output=True, text=True)
    assert "SetuptoolsDeprecationWarning" not in run.stderr, run.stderr  # e.g. project.license as a TOML table
    return out / run.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel_from_sdist(tmp_path_factory) -> Path:
    """sdist first, then the wheel built from the unpacked sdist: if the sdist lost the weights, so does the wheel."""
    import tarfile

    out = tmp_path_factory.mktemp("dist")
    sdist = build("sdist", out)
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "src", filter="data")
    return build("wheel", out, source=next((out / "src").iterdir()))


def test_the_wheel_holds_the_shipped_model(wheel_from_sdist):
    names = zipfile.ZipFile(wheel_from_sdist).namelist()
    for folder, files in SHIPPED_FILES.items():
        assert all(f"{folder}/{name}" in names for name in files)


def test_the_installed_package_loads_the_model_from_itself(wheel_from_sdist, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel_from_sdist)], check=True)
    (tmp_path / "sample.txt").write_bytes(b"Any file at all, patched the minute the install ends.")
    probe = ("import blt.pretrained as p; m, t = p.load_shipped_entropy_model(); "
             "print(p.SHIPPED); print(m.num_params(), sorted(t.file)); "
             "import bridges.pretrained as c; print(c.load_codec().concept_dim, c.SHIPPED_CODEC); "
             "from blcm.cli import main; main(['patch', 'sample.txt', '--format', 'json'])")
    env = {k: v for k, v in os.environ.items() if k != "BLCM_ENTROPY_MODEL"}
    run = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
                         cwd=tmp_path, check=True, capture_output=True, text=True, env=env)
    shipped, summary, codec, patches = run.stdout.strip().splitlines()[-4:]
    assert Path(shipped).is_relative_to(target)  # the installed copy, not the source tree
    dim, codec_dir = codec.split(" ", 1)
    assert dim == "1024" and Path(codec_dir).is_relative_to(target)
    assert "text" in summary and "wav" in summary
    out = json.loads(patches)
    assert out["model"] == "shipped" and sum(out["lengths"]) == len((tmp_path / "sample.txt").read_bytes())
