"""blcm.callbacks.Snapshots and benchmarks/codec_curve.py: a run's exports every few training minutes, and the
learning curve measured from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from byte_lcm_fixtures import TINY_ARGS, prepared_corpus, tiny_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from blcm.callbacks import Snapshots
from blcm.data.units import UnitDataModule
from blcm.model import ByteLCM

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("snapshots")
    prepared = prepared_corpus(root)
    logger = L.pytorch.loggers.TensorBoardLogger(root, name="codec")
    trainer = L.Trainer(max_steps=8, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        use_distributed_sampler=False, callbacks=[Snapshots(every_minutes=1e-9)])
    module = tiny_module(stages={"autoencoder_steps": 100})
    trainer.fit(module, UnitDataModule(str(prepared), max_units=6, batch_size=4))
    return Path(logger.log_dir), prepared


def test_snapshots_are_loadable_exports_with_growing_minutes_steps_and_bytes(run):
    log_dir, _ = run
    folders = sorted((log_dir / "snapshots").iterdir())
    records = [json.loads((f / "snapshot.json").read_text()) for f in folders]
    # an export after every step at this interval once the 3 entropy-model steps are over, and one at the end
    assert len(records) >= 5 and records[0]["step"] >= 3
    for key in ("minutes", "step", "bytes"):
        values = [r[key] for r in records]
        assert values == sorted(values) and values[-1] > values[0]
    assert records[-1]["step"] == 8
    model = ByteLCM.from_pretrained(folders[-1])
    assert model.config.concept_dim == model.codec.concept_dim == TINY_ARGS["model"]["concept_dim"]


def test_snapshot_state_survives_a_resume():
    first = Snapshots(every_minutes=5)
    first.minutes, first.next_at, first.bytes = 12.5, 15.0, 1234
    second = Snapshots(every_minutes=5)
    second.load_state_dict(first.state_dict())
    assert (second.trained_minutes(), second.next_at, second.bytes) == (12.5, 15.0, 1234)
    with pytest.raises(ValueError, match="every_minutes"):
        Snapshots(every_minutes=0)


def test_codec_curve_writes_a_table_json_and_plot(run, tmp_path):
    log_dir, prepared = run
    out = tmp_path / "curve"
    naive = tmp_path / "naive.json"  # what benchmarks/naive_codec.py writes
    naive.write_text(json.dumps({"curve": [{"minutes": 0.0, "step": 0, "bytes": 0, "exact": 0.0, "exact_sigma_0.2": 0.0,
                                            "bpb": 8.2}, {"minutes": 5.0, "step": 700, "bytes": 1_800_000,
                                                          "exact": 0.01, "exact_sigma_0.2": 0.0, "bpb": 2.1}]}))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "codec_curve.py"), str(log_dir),
                             "--data", str(prepared), "--units", "8", "--max-bytes", "64", "--out", str(out),
                             "--naive", str(naive)], capture_output=True, text=True, check=True)
    assert "| run |" in result.stdout and "naive/naive" in result.stdout
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["bytes_per_s"] for r in rows if r["run"] == "naive/naive"][1] == pytest.approx(6000.0)
    rows = [r for r in rows if not r["run"].startswith("naive/")]
    assert len(rows) == len(list((log_dir / "snapshots").iterdir()))
    assert all(0.0 <= r["exact"] <= 1.0 and r["bpb"] > 0 and "lm_bpb" in r for r in rows)
    assert rows[-1]["mflops_per_byte"] > 0
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".md").is_file()


def test_codec_curve_refuses_a_run_without_snapshots(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "codec_curve.py"), str(tmp_path),
                             "--data", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "no snapshots" in result.stderr


def test_codec_tiny_trains_the_codec_alone_through_blcm_fit(tmp_path, monkeypatch):
    """configs/codec-tiny.yaml as shipped (shrunk by flags): reconstruction only from the first step, snapshots."""
    from blcm.cli import main

    prepared = prepared_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    small = {"--model.model.encoder.dim": "32", "--model.model.encoder.pooler_dim": "32",
             "--model.model.decoder.dim": "32", "--model.model.core.model_dim": "32",
             "--model.model.core.context_layers": "1", "--model.model.core.denoiser_layers": "1",
             "--model.model.core.n_heads": "2"}
    args = ["fit", "--config", str(ROOT / "configs" / "codec-tiny.yaml"), "--data.data_dir", str(prepared),
            "--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
            *[x for kv in small.items() for x in kv]]
    assert main(args) == 0
    (run,) = (tmp_path / "runs/codec-tiny").glob("version_*")
    records = [json.loads(p.read_text()) for p in run.glob("snapshots/*/snapshot.json")]
    assert records and max(r["step"] for r in records) == 6  # the end of the run is always a snapshot
    events = EventAccumulator(str(run))
    events.Reload()
    stages = [e.value for e in events.Scalars("train/stage")]
    assert stages and set(stages) == {1.0}  # bytes are their own patches: no entropy stage, and never joint
    model = ByteLCM.from_pretrained(tmp_path / "runs/codec-tiny/export")
    assert model.codec.encoder.config.segment_bytes == 16 and model.codec.decoder.config.slots == 9
    assert model.codec.entropy_model is None and model.codec.encoder.config.patch_size == 1


def test_the_training_clock_skips_validation_and_the_exports(monkeypatch):
    from blcm import callbacks

    now = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    clock = callbacks.TrainingClock()
    clock.on_train_batch_start(None, None, None, 0)  # training from t = 0 s
    now[0] = 60.0
    clock.on_validation_start(None, None)  # one minute trained, then 10 minutes of validation
    now[0] = 660.0
    clock.on_train_batch_start(None, None, None, 1)
    now[0] = 720.0
    clock._exclude(30.0)  # an export took 30 of those 60 seconds
    assert clock.trained_minutes() == pytest.approx(1.5)
    assert clock.state_dict() == {"minutes": pytest.approx(1.5)}
