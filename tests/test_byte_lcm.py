"""ByteLCM end to end: the joint LightningModule (stages, losses, gradient routing, validation metrics,
TensorBoard text), export and reload, document generation, and a NaN that stops training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from byte_lcm_fixtures import TINY_ARGS, loss_terms, prepared_corpus, tiny_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from blcm import ConfigError
from blcm.callbacks import MetricsHistory
from blcm.data.units import UnitDataModule
from blcm.lightning import ByteLCMModule, EntropyLMModule
from blcm.lightning.config import instantiate
from blcm.model import QUANTIZER_BATCHES, ByteLCM, ByteLCMConfig
from concept_core.interface import Sampling


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepared_corpus(tmp_path_factory.mktemp("toy"))


def first_batch(prepared: Path, split: str = "train") -> dict:
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=8)
    dm.setup("fit")
    return next(iter(dm.train_dataloader() if split == "train" else dm.val_dataloader()))


@pytest.fixture(scope="module")
def fitted(prepared, tmp_path_factory):
    """12 steps: 3 entropy-model steps, 3 autoencoder steps, 6 joint ones; validation every 6."""
    root = tmp_path_factory.mktemp("fit")
    module = tiny_module(export_dir=str(root / "export"))
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=8)
    logger = L.pytorch.loggers.TensorBoardLogger(root, name="tb")
    trainer = L.Trainer(max_steps=12, val_check_interval=6, check_val_every_n_epoch=None, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False, callbacks=[MetricsHistory()],
                        log_every_n_steps=1)
    trainer.fit(module, dm)
    return module, root, Path(logger.log_dir)


def test_stage_schedule():
    module = tiny_module()
    assert [module.stage(s) for s in (0, 2, 3, 5, 6, 100)] == ["entropy"] * 2 + ["autoencoder"] * 2 + ["joint"] * 2
    static = tiny_module(model={"encoder": {**TINY_ARGS["model"]["encoder"], "patching": "static"}})
    assert static.stage(0) == "autoencoder"  # no entropy model, no entropy stage


def test_each_stage_has_its_losses(prepared):
    module, batch = tiny_module(model={"loss": {"entropy_weight": 0.5}}), first_batch(prepared)
    assert set(loss_terms(module.model, batch, "entropy")) == {"entropy"}
    assert module.model.codec.encoder.needs_calibration
    assert set(loss_terms(module.model, batch, "autoencoder")) == {"reconstruction", "entropy"}
    assert not module.model.codec.encoder.needs_calibration  # calibrated when the entropy stage ended
    terms = loss_terms(module.model, batch, "joint")
    assert set(terms) == {"reconstruction", "core", "entropy"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert abs(terms["reconstruction"].item() - math.log(260)) < 1.0  # an untrained decoder is near uniform


@pytest.mark.parametrize("variant", ["base", "one_tower", "two_tower", "quant", "energy"])
def test_every_core_variant_trains_jointly(prepared, variant):
    core = {"variant": variant, "model_dim": 32, "n_heads": 2, "n_layers": 1, "context_layers": 1,
            "denoiser_layers": 1, "num_codebooks": 2, "codebook_size": 4, "head_layers": 1}
    fields = {"base": ("n_layers",), "one_tower": ("n_layers",), "two_tower": ("context_layers", "denoiser_layers"),
              "quant": ("n_layers", "num_codebooks", "codebook_size"),
              "energy": ("context_layers", "head_layers")}[variant]
    core = {k: v for k, v in core.items() if k in ("variant", "model_dim", "n_heads", *fields)}
    # zero-initialised outputs: only targets carry a gradient into the encoder on step one
    module = tiny_module(model={"core": core, "loss": {"detach_core_targets": False}})
    batch = first_batch(prepared)
    loss_terms(module.model, batch, "autoencoder")  # calibrate
    for _ in range(QUANTIZER_BATCHES - 1 if variant == "quant" else 0):  # Quant pools concepts for its codebooks
        assert "core" not in loss_terms(module.model, batch, "joint")
    loss = loss_terms(module.model, batch, "joint")["core"]
    loss.backward()
    assert torch.isfinite(loss)
    # Quant's zero-initialised heads pass no gradient back to their inputs on the first step.
    part = module.model.core if variant == "quant" else module.model.codec.encoder.local
    assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0


def test_detached_core_sends_no_gradient_to_the_encoder(prepared):
    batch = first_batch(prepared)
    for detach, expect_grad in ((False, True), (True, False)):
        module = tiny_module(model={"core": {"variant": "base", "model_dim": 32, "n_heads": 2, "n_layers": 1},
                                    "loss": {"detach_core_inputs": detach, "detach_core_targets": detach}})
        loss_terms(module.model, batch, "autoencoder")
        loss_terms(module.model, batch, "joint")["core"].backward()
        grads = [p.grad for p in module.model.codec.encoder.local.parameters() if p.grad is not None]
        assert (sum(g.abs().sum() for g in grads) > 0 if grads else False) == expect_grad


def test_fit_logs_metrics_text_and_exports(fitted):
    module, root, log_dir = fitted
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/entropy", "train/reconstruction", "train/core", "val/bpb", "val/exact", "val/exact_le128",
                "val/entropy_bpb", "val/core_loss", "val/l2", "val/ca", "val/copy_last_l2", "val/copy_last_ca"):
        assert tag in scalars, tag
    assert {"val/reconstruction/text_summary", "val/continuation/text_summary"} <= set(events.Tags()["tensors"])
    history = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [6, 12] and history[1]["minutes"] > history[0]["minutes"] > 0

    exported = ByteLCM.from_pretrained(root / "export")
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(tensor.cpu(), exported.state_dict()[name]), name
    assert not exported.codec.encoder.needs_calibration


def test_training_lowers_the_reconstruction_loss(prepared):
    module = tiny_module(stages={"entropy_steps": 0, "autoencoder_steps": 1000})
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4)
    dm.setup("fit")
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        for batch in dm.train_dataloader():
            loss = loss_terms(module.model, batch, "autoencoder")["reconstruction"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_export_round_trip_and_errors(fitted, tmp_path):
    module, root, _ = fitted
    model = ByteLCM.from_pretrained(root / "export")
    text = b"The cat sat on the mat. A dog ran past the sea! "
    torch.testing.assert_close(model.encode(text), module.model.eval().encode(text))
    with pytest.raises(FileNotFoundError, match="not an exported ByteLCM"):
        ByteLCM.from_pretrained(tmp_path)
    entropy_dir = module.model.codec.encoder.entropy_model.save_pretrained(tmp_path / "entropy")
    with pytest.raises(ValueError, match="does not describe a ByteLCM"):
        ByteLCM.from_pretrained(entropy_dir)
    model.save_pretrained(tmp_path / "again")
    model.save_pretrained(tmp_path / "again")  # replaces the old export in one rename
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".again*"))


def test_generate_stops_at_the_end_of_document_concept(fitted, monkeypatch):
    model = ByteLCM.from_pretrained(fitted[1] / "export")
    eod = model.codec.eod_concept()
    monkeypatch.setattr(model.core, "sample", lambda state, sampling, generator=None: eod[None])
    assert model.generate(b"The cat sat on the mat.") == b""


def test_generate_yields_at_most_max_units_and_is_seeded(fitted):
    model = ByteLCM.from_pretrained(fitted[1] / "export")
    kwargs = {"max_units": 3, "sampling": Sampling(steps=3), "eod_threshold": 1.1}  # never stops at EOD
    units = list(model.iter_generate(b"The cat sat on the mat. ", seed=1, **kwargs))
    assert 1 <= len(units) <= 3 and all(units)
    assert list(model.iter_generate(b"The cat sat on the mat. ", seed=1, **kwargs)) == units
    with pytest.raises(ValueError, match="empty"):
        model.generate(b"")


def test_generation_plans_then_decodes_in_one_pass(fitted, monkeypatch):
    """Default: the core's samples extend its context and the whole plan is decoded by one call; --reencode:
    one decode and one encode per unit."""
    model = ByteLCM.from_pretrained(fitted[1] / "export")
    decoded, encoded = [], []
    decode, encode = model.codec.decode, model.codec.encode
    monkeypatch.setattr(model.codec, "decode", lambda c, *a, **k: decoded.append(len(c)) or decode(c, *a, **k))
    monkeypatch.setattr(model.codec, "encode", lambda u, *a, **k: encoded.append(len(u)) or encode(u, *a, **k))
    kwargs = {"max_units": 3, "sampling": Sampling(steps=3), "eod_threshold": 1.1}  # never stops at EOD
    prompt = b"The cat sat on the mat. "
    planned = list(model.iter_generate(prompt, seed=1, **kwargs))
    assert decoded == [3] and encoded == [len(model.units(prompt))]  # the prompt's units only
    assert 1 <= len(planned) <= 3 and all(planned)
    decoded.clear(), encoded.clear()
    reencoded = list(model.iter_generate(prompt, seed=1, reencode=True, **kwargs))
    assert decoded == [1] * len(decoded) and len(decoded) >= len(reencoded)
    assert encoded[1:] == [1] * (len(encoded) - 1)  # after the prompt, one unit at a time


def test_a_nan_loss_stops_training_naming_step_and_term(prepared):
    module = tiny_module(stages={"entropy_steps": 0, "autoencoder_steps": 0})
    with torch.no_grad():
        module.model.codec.decoder.to_slots.weight.fill_(float("nan"))
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=0)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    with pytest.raises(FloatingPointError, match="step 0: the reconstruction loss is nan"):
        trainer.fit(module, dm)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, low, high", [("tiny", 5e6, 2e7), ("small", 3e7, 1.5e8), ("base", 3e8, 2e9)])
def test_model_configs_build_at_their_sizes(name, low, high):
    import yaml

    init_args = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["init_args"]
    with torch.device("meta"):
        module = instantiate(ByteLCMModule, init_args)
    total = sum(module.model.num_params().values())
    assert low < total < high, f"{name}: {total:,} parameters"


def test_the_next_byte_baseline_matches_tiny_in_parameters():
    import yaml

    def init_args(name):
        return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["model"]["init_args"]

    with torch.device("meta"):
        tiny = sum(instantiate(ByteLCMModule, init_args("tiny")).model.num_params().values())
        baseline = instantiate(EntropyLMModule, init_args("bytegpt-tiny")).model.num_params()
    assert abs(baseline - tiny) / tiny < 0.01, (baseline, tiny)


def test_data_cut_longer_than_a_chunk_codec_holds_is_refused_at_fit_start(prepared):
    from blcm import ConfigError

    model = {"concept_dim": 64, "segmenter": {"kind": "sentence", "max_bytes": 32},
             "codec": {"kind": "chunk", "max_bytes": 32, "chunk_bytes": 8, "byte_dim": 8, "hidden": 32},
             "core": {"variant": "base", "model_dim": 32, "n_layers": 1, "n_heads": 2}}
    module = ByteLCMModule(ByteLCMConfig(**model), init_entropy_from=None)
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    with pytest.raises(ConfigError, match="--max-unit-bytes 32"):
        trainer.fit(module, dm)


def test_a_segmenter_mismatch_between_data_and_model_is_a_warning(prepared):
    module = tiny_module(model={"segmenter": {"kind": "sentence", "max_bytes": 100}},
                         stages={"entropy_steps": 0, "autoencoder_steps": 0})
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    with pytest.warns(UserWarning, match="prepared with segmenter"):
        trainer.fit(module, dm)


def test_a_quant_core_validates_before_and_after_its_codebooks_are_fitted(prepared, tmp_path):
    module = tiny_module(model={"core": {"variant": "quant", "model_dim": 32, "n_heads": 2, "n_layers": 1,
                                         "num_codebooks": 2, "codebook_size": 4}},
                         stages={"entropy_steps": 1, "autoencoder_steps": 1})
    dm = UnitDataModule(str(prepared), max_units=6, batch_size=4, val_windows=8)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(max_steps=2 + QUANTIZER_BATCHES + 2, val_check_interval=2, check_val_every_n_epoch=None,
                        logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, dm)
    assert bool(module.model.core.quantizer.fitted)
    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    core_loss = [e.step for e in events.Scalars("val/core_loss")]
    assert core_loss and max(core_loss) > 2 + QUANTIZER_BATCHES  # scored once the codebooks exist


def test_bad_model_configs_are_config_errors():
    from blcm import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        tiny_module(model={"core": {"variant": "nope"}})
    with pytest.raises(ConfigError, match="not an exported ByteLCM"):
        tiny_module(init_from="/nonexistent")
    with pytest.raises(ConfigError, match="uses no entropy model"):
        tiny_module(model={"encoder": {**TINY_ARGS["model"]["encoder"], "patching": "static"}}, init_entropy_from="/x")


def test_a_frozen_codec_stays_fixed_while_the_core_learns(fitted, prepared):
    _, root, _ = fitted
    with pytest.raises(ConfigError, match="freeze_codec"):
        tiny_module(freeze_codec=True)  # nothing trained to freeze
    with pytest.raises(ConfigError, match="entropy_weight"):
        tiny_module(init_from=str(root / "export"), freeze_codec=True, model={"loss": {"entropy_weight": 0.1}})
    module = tiny_module(init_from=str(root / "export"), freeze_codec=True)
    codec_before = {k: v.clone() for k, v in module.model.codec.state_dict().items()}
    core_before = {k: v.clone() for k, v in module.model.core.state_dict().items()}
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        use_distributed_sampler=False)
    trainer.fit(module, UnitDataModule(str(prepared), max_units=6, batch_size=4))
    assert module.stage(0) == "joint"
    for k, v in module.model.codec.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(v, codec_before[k]), k
    assert any(not torch.equal(v, core_before[k]) for k, v in module.model.core.state_dict().items())
    assert "reconstruction" not in loss_terms(module.model, first_batch(prepared), "joint")


def test_entropy_patching_takes_the_shipped_model_and_its_thresholds_by_default():
    from blt.pretrained import load_shipped_entropy_model
    from bridges.modality import MODALITIES

    module = tiny_module(init_entropy_from="shipped")
    shipped, thresholds = load_shipped_entropy_model()
    encoder = module.model.codec.encoder
    assert module.stage(0) == "autoencoder"  # no entropy stage
    assert not encoder.needs_calibration
    assert encoder.entropy_model.config.dim == shipped.config.dim == module.model.config.encoder.entropy_dim
    assert all(torch.equal(a, b) for a, b in zip(encoder.entropy_model.state_dict().values(),
                                                 shipped.state_dict().values(), strict=True))
    assert encoder.entropy_thresholds.tolist() == pytest.approx([thresholds.pick("unit", m) for m in MODALITIES])
    static = tiny_module(model={"encoder": {**TINY_ARGS["model"]["encoder"], "patching": "static"}},
                         init_entropy_from="shipped")
    assert static.model.codec.entropy_model is None  # nothing to patch with, nothing loaded
