"""The ByteLCMModule's grouped settings: concept_dim once, help, init_args, checkpoint and export formats."""

from __future__ import annotations

import json
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
from blcm.model import ByteLCM, ByteLCMConfig
from blcm.objective import LossConfig
from blt.ids import EOD, PAD
from concept_core.quant import QuantizedLCMConfig
from primitives.export import FORMAT, ExportFormatError


def test_concept_dim_is_written_once_and_every_part_is_built_for_it():
    model = tiny_module(model={"concept_dim": 48}).model
    config = model.config
    assert json.dumps(asdict(config)).count("concept_dim") == 1  # the sub-configs hold no copy
    assert model.codec.concept_dim == 48 and model.core.concept_dim == 48
    assert ByteLCMConfig.from_dict(asdict(config)) == config  # an export's config round-trips
    assert ByteLCM(ByteLCMConfig(concept_dim=40)).core.concept_dim == 40  # the default core too


def test_the_core_is_a_union_named_by_its_variant():
    module = tiny_module(model={"core": {"variant": "quant", "model_dim": 32, "n_heads": 2, "n_layers": 1}})
    assert isinstance(module.model.config.core, QuantizedLCMConfig) and module.model.core.concept_dim == 32
    with pytest.raises(ConfigError, match="nope"):
        tiny_module(model={"core": {"variant": "nope"}})


def test_fit_help_explains_the_groups():
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--model.help", "blcm.lightning.ByteLCMModule"],
                          capture_output=True, text=True, check=True).stdout
    for flag in ("--model.model.concept_dim", "--model.model.loss.concept_noise", "--model.stages.autoencoder_steps",
                 "--model.optim.lr", "--model.validation.sampling.steps", "--model.model.loss.alignment_weight",
                 "--model.alignment.pairs", "--model.model.encoder.patching"):
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
    assert batch.has_bytes.tolist() == [True, True, False]
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
    assert checkpoint["export"]["format"] == FORMAT
    assert set(checkpoint["hyper_parameters"]) >= {"model", "stages", "optim", "validation", "alignment"}
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    exported = ByteLCM.from_pretrained(tmp_path / "out")
    for name, tensor in module.model.state_dict().items():  # static patching: the unused thresholds are NaN
        torch.testing.assert_close(tensor, exported.state_dict()[name], rtol=0, atol=0, equal_nan=True)
    checkpoint["export"]["format"] = FORMAT + 1
    torch.save(checkpoint, tmp_path / "newer.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "newer.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    del checkpoint["export"]
    torch.save(checkpoint, tmp_path / "unnamed.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "unnamed.ckpt"), "--out", str(tmp_path / "x")]) == 2


def test_a_checkpoint_or_export_of_another_format_is_refused_naming_both(tmp_path):
    module = tiny_module()
    with pytest.raises(ConfigError, match=rf"has format 0; this byte-lcm reads format {FORMAT} only"):
        module.on_load_checkpoint({"export": {"type": "ByteLCM", "format": 0, "config": {}}})
    with pytest.raises(ConfigError, match="has no format"):
        module.on_load_checkpoint({"state_dict": {}})
    module.on_load_checkpoint({"export": {"format": FORMAT}})  # this format resumes
    export = module.model.save_pretrained(tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    assert config["format"] == FORMAT
    del config["format"]
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportFormatError, match=rf"export has no format .*reads format {FORMAT}"):
        ByteLCM.from_pretrained(export)


def test_instantiate_builds_what_the_yaml_says():
    module = instantiate(ByteLCMModule, {"model": {"concept_dim": 16, "core": {"variant": "base", "model_dim": 16},
                                                   "loss": {"concept_noise": 0.0}}, "init_entropy_from": None})
    assert module.model.core.concept_dim == 16 and module.model.config.loss == LossConfig(concept_noise=0.0)
    assert module.hparams["model"]["loss"] == asdict(LossConfig(concept_noise=0.0))  # plain dicts: weights_only


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


def test_every_shipped_config_parses_with_the_current_settings():
    from pathlib import Path

    from jsonargparse import ArgumentParser

    from blcm.lightning import EntropyLMModule

    modules = {"blcm.lightning.ByteLCMModule": ByteLCMModule, "blcm.lightning.EntropyLMModule": EntropyLMModule}
    root = Path(__file__).resolve().parents[1]
    paths = sorted(root.glob("configs/*.yaml"))
    assert paths
    for path in paths:
        model = yaml.safe_load(path.read_text())["model"]
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(modules[model["class_path"]], "module")
        parser.parse_object({"module": model["init_args"]})  # raises on a key that is not a current setting


def test_an_unknown_setting_is_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": {"class_path": "blcm.lightning.ByteLCMModule",
                                             "init_args": {"loss": {"concept_noise": 0.1}}}}))
    run = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--config", str(old)], capture_output=True,
                         text=True)
    assert run.returncode == 2 and "loss" in run.stderr and "Traceback" not in run.stderr


def test_the_config_lightning_saves_reads_back():
    import subprocess
    import sys
    from pathlib import Path

    minilm = Path(__file__).resolve().parents[1] / "configs" / "minilm-tiny.yaml"  # concept_dim 384
    saved = subprocess.run([sys.executable, "-m", "blcm.cli", "fit", "--config", str(minilm), "--print_config"],
                           capture_output=True, text=True, check=True).stdout
    model = yaml.safe_load(saved)["model"]["init_args"]["model"]
    assert model["concept_dim"] == 384 and "concept_dim" not in model["encoder"] | model["decoder"]
    module = instantiate(ByteLCMModule, {**yaml.safe_load(saved)["model"]["init_args"], "init_codec_from": None})
    assert module.model.config.concept_dim == 384 and module.model.config.codec.kind == "sentence_transformer"
