"""`blcm fit | generate | encode | decode | export` on a tiny ByteLCM: the commands work, bad input
is one line and exit status 2, a run killed with SIGKILL resumes from its last checkpoint, and
two-process DDP on CPU (gloo) trains."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from byte_lcm_fixtures import prepared_corpus, write_fit_config

from blcm.cli import main

BLCM = [sys.executable, "-m", "blcm.cli"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained for 10 steps through `blcm fit`, exported to <root>/export."""
    root = tmp_path_factory.mktemp("cli")
    config = write_fit_config(root / "fit.yaml", prepared_corpus(root))
    assert main(["fit", "--config", str(config)]) == 0
    return root


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_fit_writes_checkpoints_and_export(trained):
    (last,) = trained.glob("runs/tiny/version_*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 10
    assert (trained / "export" / "model.safetensors").is_file()
    assert not list(last.parent.glob("*.tmp"))  # atomic writes leave no temporary files


def test_encode_decode_round_trip_files(trained, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text("The cat sat on the mat. A dog ran past the sea! The river flew over the moon.")
    out = tmp_path / "concepts.npy"
    assert main(["encode", "--model", str(trained / "export"), str(text), "--out", str(out)]) == 0
    concepts = np.load(out)
    assert concepts.shape == (3, 32) and concepts.dtype == np.float32
    decoded = tmp_path / "decoded.bin"
    assert main(["decode", "--model", str(trained / "export"), str(out), "--out", str(decoded)]) == 0
    assert decoded.stat().st_size > 0


def test_encode_of_a_large_file_goes_in_batches_with_progress(trained, tmp_path, capsys):
    from blcm.commands.model import ENCODE_BATCH
    from blcm.model import ByteLCM

    data = np.random.default_rng(0).integers(0, 256, 64 * (ENCODE_BATCH + 50), dtype=np.uint8).tobytes()
    (tmp_path / "noise.bin").write_bytes(data)
    out = tmp_path / "c.npy"
    assert main(["encode", "--model", str(trained / "export"), str(tmp_path / "noise.bin"), "--out", str(out)]) == 0
    assert "encoding" in capsys.readouterr().err  # the progress bar
    model = ByteLCM.from_pretrained(trained / "export")
    whole = model.encode(data).numpy()  # one call: batching changes nothing (running statistics)
    assert np.load(out).shape == whole.shape and whole.shape[0] > ENCODE_BATCH
    assert np.allclose(np.load(out), whole, atol=1e-4)


def test_reconstruct_prints_each_unit_and_a_count(trained, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text("The cat sat on the mat. A dog ran past the sea! The river flew over the moon.")
    assert main(["reconstruct", "--model", str(trained / "export"), str(text), "--max-units", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n  -> ") == 2 and "The cat sat on the mat." in captured.out
    assert "/2 unit(s) reconstructed exactly" in captured.err


def test_generate_prints_units_or_writes_a_file(trained, tmp_path, capsys):
    model = str(trained / "export")
    args = ["generate", "--model", model, "The cat sat on the mat.", "--max-units", "2", "--steps", "3", "--seed", "0"]
    out = tmp_path / "gen.bin"
    assert main([*args, "--out", str(out)]) == 0
    from blcm.model import ByteLCM
    from concept_core.interface import Sampling

    units = list(ByteLCM.from_pretrained(model).iter_generate(b"The cat sat on the mat.", max_units=2,
                                                              sampling=Sampling(steps=3), seed=0))
    assert out.read_bytes() == b"".join(units)  # the same seed, the same units
    capsys.readouterr()
    code = main(args)  # an untrained decoder may emit non-UTF-8 bytes: then it stops there and asks for --out
    captured = capsys.readouterr()
    printed = []
    for unit in units:
        try:
            printed.append(unit.decode("utf-8"))
        except UnicodeDecodeError:
            assert code == 2 and "pass --out FILE" in captured.err
            break
    else:
        assert code == 0 and f"({len(units)} unit(s) generated)" in captured.err
    assert captured.out.split() == " ".join(printed).split()  # each printed unit, in order


def test_export_from_a_checkpoint(trained, tmp_path):
    (last,) = trained.glob("runs/tiny/version_*/checkpoints/last.ckpt")
    assert main(["export", "--ckpt", str(last), "--out", str(tmp_path / "exported")]) == 0
    from blcm.model import ByteLCM

    a, b = ByteLCM.from_pretrained(tmp_path / "exported"), ByteLCM.from_pretrained(trained / "export")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize("command, message", [
    (["generate", "--model", "{empty}", "hi"], "cannot load a ByteLCM"),
    (["generate", "--model", "{model}", ""], "the prompt is empty"),
    (["encode", "--model", "{model}", "{empty}/missing.txt", "--out", "{empty}/x.npy"], "no such file"),
    (["decode", "--model", "{model}", "{bad_npy}"], "this model decodes (n, 32) concepts"),
    (["decode", "--model", "{model}", "{empty}/missing.npy"], "no such file"),
    (["export", "--ckpt", "{bad_npy}", "--out", "{empty}/out"], "not a readable Lightning checkpoint"),
    (["generate", "--model", "{model}", "hi", "--max-units", "0"], "--max-units and --steps must be >= 1"),
    (["generate", "--model", "{model}", "hi", "--steps", "1000"], "between 1 and the model's 100"),
    (["generate", "--model", "{model}"], "no prompt"),
    (["decode", "--model", "{model}", "{npz}"], "an archive"),
    (["reconstruct", "--model", "{model}", "{bad_npy}", "--max-units", "0"], "--max-units must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, command, message):
    bad_npy = tmp_path / "bad.npy"
    np.save(bad_npy, np.zeros((2, 7), dtype=np.float32))
    np.savez(tmp_path / "concepts.npz", np.zeros((2, 32), dtype=np.float32))
    fill = {"model": str(trained / "export"), "empty": str(tmp_path), "bad_npy": str(bad_npy),
            "npz": str(tmp_path / "concepts.npz")}
    assert main([c.format(**fill) for c in command]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def last_step(run_dir: Path) -> int:
    ckpts = list(run_dir.glob("runs/tiny/version_*/checkpoints/last.ckpt"))
    if not ckpts:
        return -1
    try:
        return torch.load(ckpts[0], weights_only=True, map_location="cpu")["global_step"]
    except Exception:  # noqa: BLE001 - being replaced right now: try again
        return -1


def recorded_batches(path: Path) -> dict[int, dict]:
    """step -> the batch recorded for it (the last record wins: a resumed run retrains what the kill cut short)."""
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def with_recorder(config: Path, record: Path) -> Path:
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"].append({"class_path": "tests.byte_lcm_fixtures.RecordBatches",
                                         "init_args": {"path": str(record)}})
    config.write_text(yaml.safe_dump(data))
    return config


def test_kill_9_then_resume_sees_exactly_the_batches_of_an_uninterrupted_run(tmp_path):
    data = prepared_corpus(tmp_path)
    config = with_recorder(write_fit_config(tmp_path / "fit.yaml", data, max_steps=400), tmp_path / "batches.jsonl")
    proc = subprocess.Popen([*BLCM, "fit", "--config", str(config)], env=subprocess_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while last_step(tmp_path) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = last_step(tmp_path)
    assert 8 <= killed_at < 400, proc.stderr.read().decode()[-2000:]

    (last,) = tmp_path.glob("runs/tiny/version_*/checkpoints/last.ckpt")
    resumed = subprocess.run([*BLCM, "fit", "--config", str(config), "--ckpt_path", str(last),
                              "--trainer.max_steps", str(killed_at + 6)], env=subprocess_env(), cwd=tmp_path,
                             capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stderr.decode()
    final = [torch.load(p, weights_only=True, map_location="cpu")["global_step"]
             for p in tmp_path.glob("runs/tiny/version_*/checkpoints/last.ckpt")]
    assert killed_at + 6 in final

    reference = tmp_path / "reference"
    reference.mkdir()
    ref_config = with_recorder(write_fit_config(reference / "fit.yaml", data, max_steps=killed_at + 6),
                               reference / "batches.jsonl")
    subprocess.run([*BLCM, "fit", "--config", str(ref_config)], env=subprocess_env(), cwd=reference, check=True,
                   capture_output=True, timeout=300)
    got, want = recorded_batches(tmp_path / "batches.jsonl"), recorded_batches(reference / "batches.jsonl")
    assert sorted(got) == sorted(want) == list(range(killed_at + 6))
    assert [got[s] for s in sorted(got)] == [want[s] for s in sorted(want)]  # before the kill and after it


def test_two_process_ddp_on_cpu(tmp_path):
    # one step per stage, then joint steps, with a validation in the joint stage
    config = write_fit_config(tmp_path / "fit.yaml", prepared_corpus(tmp_path), max_steps=4, devices=2,
                              strategy="ddp_find_unused_parameters_true", val_check_interval=4,
                              model={"stages": {"entropy_steps": 1, "autoencoder_steps": 1}})
    run = subprocess.run([*BLCM, "fit", "--config", str(config)], env=subprocess_env(), cwd=tmp_path,
                         capture_output=True, timeout=300)
    log = run.stderr.decode()
    assert run.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    (last,) = tmp_path.glob("runs/tiny/version_*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 4
    assert (tmp_path / "export" / "model.safetensors").is_file()
    (history,) = tmp_path.glob("runs/tiny/version_*/metrics.jsonl")
    record = json.loads(history.read_text().splitlines()[-1])
    assert record["step"] == 4 and {"val/bpb", "val/l2", "val/core_loss"} <= set(record)


def test_the_demo_fit_prints_a_parameter_count_and_no_third_party_warnings(tmp_path):
    """`make demo`'s `blcm fit` (configs/tiny.yaml: the shipped codec, frozen), a few steps and a validation: one
    line counts the parameters in place of Lightning's table, and nothing else is a warning or an advertisement."""
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    data = prepared_corpus(tmp_path, max_unit_bytes=128)  # the codec's cap
    run = subprocess.run([*BLCM, "fit", "--config", str(tiny), "--data.data_dir", str(data), "--trainer.max_steps", "2",
                          "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"],
                         env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "exported the ByteLCM" in out and "val/l2" in out  # it trained, validated and exported
    from blcm.lightning import ByteLCMModule
    from blcm.lightning.config import instantiate

    init_args = yaml.safe_load(tiny.read_text())["model"]["init_args"]
    module = instantiate(ByteLCMModule, {**init_args, "export_dir": None})
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert 0 < trainable < total  # the frozen codec is counted, not trained
    count = f"ByteLCM: {total / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trainable)"
    assert out.splitlines().count(count) == 1, out
    for noise in ("FLOPs", "Trainable params", "litlogger", "LeafSpec", "args parameter"):
        assert noise not in out, out
    warnings = [line for line in out.splitlines() if re.search(r"warn|\.py:\d+: ", line, re.IGNORECASE)]
    assert not warnings, out


def test_fit_with_a_model_that_cannot_be_built_is_one_line(tmp_path, capsys):
    config = write_fit_config(tmp_path / "fit.yaml", prepared_corpus(tmp_path), model={"init_from": "/nonexistent"})
    assert main(["fit", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("blcm fit: error: cannot build the ByteLCM: /nonexistent is not an exported")
