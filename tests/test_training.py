"""Training the entropy model with Lightning: the loss falls, bits per byte reach TensorBoard,
the model is exported, the CLI runs, and a NaN stops training with a message naming it."""

import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from blcm.cli import main
from blcm.data.streams import ByteStreamDataModule
from blcm.lightning import EntropyLMModule
from blcm.lightning.optim import OptimConfig, check_finite, warmup_cosine
from blt.entropy import EntropyModel, EntropyModelConfig

TEXT = ("The cat sat on the mat. The dog sat on the log. " * 40 + "\n")


@pytest.fixture
def corpus(tmp_path) -> tuple[str, str]:
    (tmp_path / "train.txt").write_text(TEXT * 3)
    (tmp_path / "valid.txt").write_text(TEXT)
    return str(tmp_path / "train.txt"), str(tmp_path / "valid.txt")


def scalars(log_dir: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [e.value for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_fit_lowers_bits_per_byte_and_exports(tmp_path, corpus):
    torch.manual_seed(0)
    module = EntropyLMModule(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=64),
                             OptimConfig(lr=1e-2, warmup_steps=5), export_dir=str(tmp_path / "export"))
    dm = ByteStreamDataModule([corpus[0]], [corpus[1]], seq_len=64, batch_size=8)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(max_steps=60, val_check_interval=30, check_val_every_n_epoch=None, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(module, dm)
    bpb = scalars(Path(logger.log_dir), "val/bpb")
    assert len(bpb) == 2 and bpb[1] < bpb[0] < 8.5
    assert bpb[1] < 3.0  # a repetitive text is far below the 8 bits of a uniform guess
    exported = EntropyModel.from_pretrained(tmp_path / "export")
    ids = torch.randint(4, 260, (2, 20))
    torch.testing.assert_close(exported(ids), module.model.eval()(ids))


def test_cli_fit_runs_from_a_config(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "entropy-tiny.yaml"
    args = ["fit", "--config", str(config), "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--model.model.dim", "32", "--model.model.n_layers", "1", "--model.model.n_heads", "2",
            "--data.train_files", f"[{corpus[0]}]", "--data.val_files", f"[{corpus[1]}]", "--data.batch_size", "4"]
    assert main([*args, "--trainer.max_steps", "4"]) == 0
    assert (tmp_path / "runs/entropy-tiny/export/model.safetensors").is_file()
    (last,) = (tmp_path / "runs/entropy-tiny").glob("version_*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 4  # the end, not step 0
    assert scalars(next((tmp_path / "runs/entropy-tiny").glob("version_*")), "val/bpb")
    # Resume (the checkpoint loads with weights_only=True) and go on to step 6.
    assert main([*args, "--trainer.max_steps", "6", "--ckpt_path", str(last)]) == 0
    (resumed,) = (tmp_path / "runs/entropy-tiny").glob("version_1/checkpoints/last.ckpt")
    assert torch.load(resumed, weights_only=True, map_location="cpu")["global_step"] == 6


def test_the_next_byte_baseline_trains_through_the_same_entry_point(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "bytegpt-tiny.yaml"
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
                 "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
                 "--model.model.dim", "32", "--model.model.n_layers", "1", "--model.model.n_heads", "2",
                 "--model.model.context", "64",
                 "--data.seq_len", "64", "--data.train_files", f"[{corpus[0]}]",
                 "--data.val_files", f"[{corpus[1]}]"]) == 0
    exported = EntropyModel.from_pretrained(tmp_path / "runs/bytegpt-tiny/export")
    assert exported.config.context == 64 and len(exported.generate(b"The cat", max_new_bytes=8)) <= 8
    (run,) = (tmp_path / "runs/bytegpt-tiny").glob("version_*")
    assert "val/bpb" in (run / "metrics.jsonl").read_text()  # the curve benchmarks/wallclock.py reads


def test_validate_an_export(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=256)).save_pretrained(tmp_path / "exp")
    config = Path(__file__).resolve().parents[1] / "configs" / "entropy-tiny.yaml"
    code = main(["validate", "--config", str(config), "--model.model.dim", "32", "--model.model.n_layers", "1",
                 "--model.model.n_heads", "2", "--model.init_from", str(tmp_path / "exp"), "--trainer.logger", "false",
                 "--data.train_files", f"[{corpus[0]}]", "--data.val_files", f"[{corpus[1]}]"])
    assert code == 0
    assert "val/bpb" in capsys.readouterr().out


def test_cli_fit_bad_data_is_one_clear_line(tmp_path, capsys):
    config = Path(__file__).resolve().parents[1] / "configs" / "entropy-tiny.yaml"
    code = main(["fit", "--config", str(config), "--data.train_files", f"[{tmp_path / 'missing.jsonl'}]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no such file or directory" in err and "Traceback" not in err


def test_nan_loss_names_step_and_term():
    with pytest.raises(FloatingPointError, match="step 7: the entropy-model loss is nan"):
        check_finite(torch.tensor(float("nan")), 7, "entropy-model")


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(1000, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(1000, 10, None, 0.1) == 1.0


def test_fit_prints_lightnings_messages_once(tmp_path):
    """A fresh process, as a user runs it: the logging set-up is process-wide."""
    import subprocess
    import sys

    (tmp_path / "t.txt").write_text("a little text for the model to read. " * 100)
    config = Path(__file__).resolve().parents[1] / "configs" / "entropy-tiny.yaml"
    run = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--config", str(config), "--model.model.dim", "32",
                          "--model.model.n_layers", "1", "--model.model.n_heads", "2", "--data.train_files", "[t.txt]",
                          "--data.batch_size", "2", "--trainer.max_steps", "1",
                          "--trainer.enable_progress_bar", "false"],
                         cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    out = run.stdout + run.stderr
    assert out.count("EntropyModel: ") == 1 and out.count("GPU available") == 1  # blcm.callbacks.ParameterCount's


def test_the_parameter_count_line():
    from blcm.callbacks import human_count, parameter_count_line

    assert [human_count(n) for n in (0, 999, 1000, 1234, 999_960, 6_900_000, 2 * 10**9)] == \
        ["0", "999", "1.0 K", "1.2 K", "1.0 M", "6.9 M", "2.0 B"]
    module = L.LightningModule()
    module.frozen, module.trained = torch.nn.Linear(100, 10), torch.nn.Linear(1000, 2)  # 1010 and 2002 parameters
    module.frozen.requires_grad_(False)
    assert parameter_count_line(module) == "LightningModule: 3.0 K parameters (2.0 K trainable)"
    module.model = EntropyModel(EntropyModelConfig(dim=8, n_layers=1, n_heads=2))  # named by its export kind
    model_params = sum(p.numel() for p in module.model.parameters())
    assert parameter_count_line(module) == (f"EntropyModel: {human_count(3012 + model_params)} parameters "
                                            f"({human_count(2002 + model_params)} trainable)")
