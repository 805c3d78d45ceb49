"""The ByteLCMModule's grouped settings: derived fields, old keys, help, a module from init_args, checkpoint export."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import yaml
from byte_lcm_fixtures import TINY_ARGS, tiny_module

from blcm import ConfigError
from blcm.batch import UnitBatch
from blcm.cli import main
from blcm.lightning import ByteLCMModule
from blcm.lightning.config import instantiate
from blcm.lightning.renamed import check_renamed, old_settings
from blcm.model import ByteLCM, ByteLCMConfig
from blcm.objective import LossConfig
from blt.ids import EOD, PAD
from concept_core.quant import QuantizedLCMConfig


def test_concept_dim_is_written_once_and_derived_everywhere():
    config = ByteLCMConfig.from_dict({**TINY_ARGS["model"], "concept_dim": 48})
    assert config.encoder.concept_dim == config.decoder.concept_dim == config.core.dim == 48
    model = ByteLCM(config)
    assert model.codec.dim == 48 and model.core.dim == 48
    assert ByteLCMConfig.from_dict(asdict(config)) == config  # an export's config round-trips
    assert ByteLCM(ByteLCMConfig(concept_dim=40)).core.dim == 40  # the default core too


def test_the_core_is_a_union_named_by_its_variant():
    module = tiny_module(model={"core": {"variant": "quant", "model_dim": 32, "n_heads": 2, "n_layers": 1}})
    assert isinstance(module.model.config.core, QuantizedLCMConfig) and module.model.core.dim == 32
    with pytest.raises(ConfigError, match="nope"):
        tiny_module(model={"core": {"variant": "nope"}})


def test_an_old_flat_key_names_its_new_place(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.lr is now model\.optim\.lr"):
        check_renamed(["fit", "--model.lr", "0.1"])
    with pytest.raises(ConfigError, match=r"model\.align_weight is now model\.alignment\.weight"):
        check_renamed(["fit", "--model.align_weight=1"])
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": {"class_path": "blcm.lightning.ByteLCMModule",
                                             "init_args": {"val_sampling": {"steps": 4}}}}))
    with pytest.raises(ConfigError, match=r"model\.val_sampling is now model\.validation\.sampling"):
        check_renamed(["fit", "--config", str(old)])
    with pytest.raises(ConfigError, match="set from model.model.concept_dim"):
        check_renamed(["fit", "--model.model.encoder.concept_dim", "64"])
    assert main(["fit", "--config", str(old)]) == 2  # the command reports it in one line


def test_a_saved_config_repeating_the_derived_concept_dim_is_fine(tmp_path):
    saved = {"model": {"init_args": {"model": {"concept_dim": 32, "encoder": {"concept_dim": 32}}}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    check_renamed(["fit", "--config", str(path)])
    saved["model"]["init_args"]["model"]["encoder"]["concept_dim"] = 64
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="concept_dim"):
        check_renamed(["fit", "--config", str(path)])


def test_every_shipped_config_uses_the_grouped_keys():
    from pathlib import Path

    from blcm.lightning.renamed import yaml_old_keys

    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("configs/*.yaml"), *root.glob("benchmarks/results/*/*.yaml")]:
        assert yaml_old_keys(yaml.safe_load(path.read_text())) == [], path


def test_fit_help_explains_the_groups():
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--model.help", "blcm.lightning.ByteLCMModule"],
                          capture_output=True, text=True, check=True).stdout
    for flag in ("--model.model.concept_dim", "--model.loss.concept_noise", "--model.stages.autoencoder_steps",
                 "--model.optim.lr", "--model.validation.sampling.steps", "--model.alignment.weight",
                 "--model.model.encoder.patching"):
        assert flag in text, flag


def test_group_settings_are_checked():
    with pytest.raises(ConfigError, match="concept_noise"):
        LossConfig(concept_noise=-1)
    with pytest.raises(ConfigError, match="lr > 0"):
        tiny_module(optim={"lr": 0})
    with pytest.raises(ConfigError, match="stage lengths"):
        tiny_module(stages={"entropy_steps": -1})
    weights = LossConfig(core_weight=0.5, entropy_weight=0.25)
    assert (weights.weight("core", "joint"), weights.weight("entropy", "joint"), weights.weight("entropy", "entropy")) \
        == (0.5, 0.25, 1.0)


def test_decoder_inputs_are_noised_only_in_training():
    concepts = torch.randn(5, 8)
    noisy = LossConfig(concept_noise=0.5)
    assert torch.equal(noisy.decoder_inputs(concepts, training=False), concepts)
    assert not torch.allclose(noisy.decoder_inputs(concepts, training=True), concepts)
    assert torch.equal(LossConfig(concept_noise=0.0).decoder_inputs(concepts, training=True), concepts)


def test_a_unit_batch_gathers_each_windows_sequence():
    units = torch.tensor([[5, 6], [7, PAD], [EOD, PAD]])
    batch = UnitBatch(units=units, unit_lengths=torch.tensor([2, 1, 1]), doc_units=torch.tensor([[0, 2], [1, -1]]),
                      doc_mask=torch.tensor([[True, True], [True, False]]),
                      unit_modalities=torch.zeros(3, dtype=torch.long))
    concepts = torch.arange(6.0).reshape(3, 2)
    assert batch.sequences(concepts).tolist() == [[[0, 1], [4, 5]], [[2, 3], [0, 0]]]
    assert batch.text.tolist() == [True, True, False]
    assert batch.padding_waste() == pytest.approx(2 / 6)


def test_the_checkpoint_names_its_export_and_blcm_export_reads_it(tmp_path):
    import lightning as L

    module = tiny_module(model={"encoder": {**TINY_ARGS["model"]["encoder"], "patching": "static"}})
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["export"]["type"] == "ByteLCM"
    assert checkpoint["export"]["config"] == asdict(module.model.config)
    assert set(checkpoint["hyper_parameters"]) >= {"model", "loss", "stages", "optim", "validation", "alignment"}
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    exported = ByteLCM.from_pretrained(tmp_path / "out")
    for name, tensor in module.model.state_dict().items():  # static patching: the unused thresholds are NaN
        torch.testing.assert_close(tensor, exported.state_dict()[name], rtol=0, atol=0, equal_nan=True)
    del checkpoint["export"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "old.ckpt"), "--out", str(tmp_path / "x")]) == 2


def test_instantiate_builds_what_the_yaml_says():
    module = instantiate(ByteLCMModule, {"model": {"concept_dim": 16, "core": {"variant": "base", "model_dim": 16}},
                                         "loss": {"concept_noise": 0.0}, "init_entropy_from": None})
    assert module.model.core.dim == 16 and module.loss.concept_noise == 0.0
    assert module.hparams["loss"] == asdict(LossConfig(concept_noise=0.0))  # plain dicts for weights_only loading


def test_a_data_class_path_from_before_blcm_data_names_its_new_place(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"data": {"class_path": "blcm.units.UnitDataModule"}}))
    with pytest.raises(ConfigError, match="is now blcm.data.units.UnitDataModule"):
        check_renamed(["fit", f"--config={old}"])

    old.write_text(yaml.safe_dump({"data": {"class_path": "blcm.data.units.UnitDataModule",
                                            "init_args": {"max_unit_bytes": 128}}}))
    with pytest.raises(ConfigError, match="model's segmenter"):
        check_renamed(["fit", "--config", str(old)])
    with pytest.raises(ConfigError, match="model's segmenter"):
        check_renamed(["fit", "--data.max_unit_bytes", "64"])


def test_a_flag_changes_one_field_of_the_yamls_core_and_keeps_its_variant(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    overlay = tmp_path / "quant.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"init_args": {"model": {"core": {
        "variant": "quant", "model_dim": 64, "n_heads": 2, "num_codebooks": 2}}}}}))
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    printed = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--config", str(tiny), "--config", str(overlay),
                              "--model.model.core.n_layers", "3", "--print_config"],
                             capture_output=True, text=True, check=True).stdout
    init_args = yaml.safe_load(printed)["model"]["init_args"]
    module = instantiate(ByteLCMModule, {**init_args, "init_entropy_from": None, "export_dir": None})
    core = module.model.config.core
    assert isinstance(core, QuantizedLCMConfig) and (core.n_layers, core.model_dim, core.num_codebooks) == (3, 64, 2)


def test_a_core_or_codec_dict_is_typed_and_checked():
    config = ByteLCMConfig(concept_dim=16, core={"variant": "base", "n_layers": "3", "model_dim": "16"},
                           codec={"kind": "sonar", "batch_size": "8"})
    assert config.core.n_layers == 3 and config.core.model_dim == 16 and config.codec.batch_size == 8
    assert ByteLCMConfig.from_dict(asdict(config)) == config
    with pytest.raises(ConfigError, match="no field"):
        ByteLCMConfig(core={"variant": "quant", "context_layers": 2})  # a Two-Tower field: switch with the whole dict
    with pytest.raises(ConfigError, match="'kind' one of"):
        ByteLCMConfig(codec={"kind": "laser"})


def test_an_export_from_before_concept_dim_takes_its_codecs_dimension():
    old_minilm = {"codec": {"kind": "sentence_transformer"}, "encoder": {"concept_dim": 256},
                  "decoder": {"concept_dim": 384}}
    assert ByteLCMConfig.from_dict(old_minilm).concept_dim == 384
    assert ByteLCMConfig.from_dict({"codec": {"kind": "sonar"}, "decoder": {"concept_dim": 256}}).concept_dim == 1024
    assert ByteLCMConfig.from_dict({"encoder": {"concept_dim": 64}, "decoder": {"concept_dim": 64}}).concept_dim == 64
    assert ByteLCMConfig.from_dict({"codec": {"kind": "sentence_transformer"}}).concept_dim == 256  # all defaults


def test_old_nested_flags_and_an_old_checkpoint_name_their_new_place(tmp_path):
    assert old_settings(["fit", "--model.encoder.patching=space", "--model.val_sampling.steps", "4"]) == [
        "model.encoder.patching is now model.model.encoder.patching",
        "model.val_sampling.steps is now model.validation.sampling.steps"]
    assert old_settings(["fit", "--model.model.encoder.dim", "3", "--model.validation.sampling.steps", "3"]) == []
    old = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"lr": 1e-3, "autoencoder_steps": 300}, "state_dict": {}}, old)
    with pytest.raises(ConfigError, match="cannot resume with this version"):
        check_renamed(["fit", "--ckpt_path", str(old)])
    new = tmp_path / "new.ckpt"
    torch.save({"hyper_parameters": {"model": {}, "optim": {"lr": 1e-3}}, "state_dict": {}}, new)
    check_renamed(["fit", f"--ckpt_path={new}"])


def test_the_config_lightning_saves_passes_the_old_key_check(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    minilm = Path(__file__).resolve().parents[1] / "configs" / "minilm-tiny.yaml"  # concept_dim 384, not 256
    saved = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--config", str(minilm), "--print_config"],
                           capture_output=True, text=True, check=True).stdout
    path = tmp_path / "config.yaml"
    path.write_text(saved)
    assert yaml.safe_load(saved)["model"]["init_args"]["model"]["encoder"]["concept_dim"] == 256  # not derived
    assert old_settings(["fit", "--config", str(path)]) == []
