"""Paired files and transcripts (blcm.data.pairs): reading and splitting, InfoNCE and retrieval against direct
computations, the alignment loss learning on a toy pair set, `blcm eval --pairs`, and bad pair directories."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from byte_lcm_fixtures import TINY_ARGS, tiny_module
from conftest import shared_file

from blcm import ConfigError, DataError
from blcm.data.pairs import group_means, read_pairs
from blcm.eval import EvalSettings, evaluate, read_documents, render_markdown
from blcm.eval.search import retrieval_accuracy
from blcm.objective import info_nce
from blt.ids import pad_batch
from concept_core.interface import Sampling

MODALITY_SEGMENTER = {"kind": "modality", "text": {"kind": "sentence", "max_bytes": 64},
                      "other": {"kind": "fixed", "size": 64}}
STATIC_MODEL = {"encoder": {**TINY_ARGS["model"]["encoder"], "patching": "static"}, "segmenter": MODALITY_SEGMENTER}


def write_pairs(directory: Path, n: int = 12, seed: int = 0) -> Path:
    """n fake 'recordings' (a WAV header, then bytes drawn from a per-file alphabet) with one-line transcripts."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        alphabet = rng.sample(range(256), 8)
        body = bytes(rng.choice(alphabet) for _ in range(600))
        (directory / f"clip-{i}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + body)
        records.append({"file": f"clip-{i}.wav", "text": f"Prompt number {i} says {rng.choice(['yes', 'no'])}."})
    (directory / "transcripts.json").write_text(json.dumps(records))
    return directory


def test_read_pairs_splits_stably_into_disjoint_parts(tmp_path):
    folder = write_pairs(tmp_path / "p", n=40)
    everything = read_pairs(folder)
    train, valid = read_pairs(folder, "train"), read_pairs(folder, "valid")
    assert len(everything) == 40 and train and valid
    assert sorted(p.name for p in train + valid) == sorted(p.name for p in everything)
    assert [p.name for p in read_pairs(folder, "valid")] == [p.name for p in valid]  # stable
    first = everything[0]
    assert first.data == (folder / first.name).read_bytes() and first.text.startswith(b"Prompt number 0")


@pytest.mark.parametrize("content, message", [
    (None, "no transcripts.json"),
    ("{not json", "unreadable"),
    (json.dumps({"file": "a.wav"}), "must be a list"),
    (json.dumps([{"file": "missing.wav", "text": "hi"}]), "cannot be read"),
    (json.dumps([{"file": "empty.wav", "text": "hi"}]), "empty file or transcript"),
])
def test_bad_pair_directories_are_refused_clearly(tmp_path, content, message):
    (tmp_path / "empty.wav").write_bytes(b"")
    if content is not None:
        (tmp_path / "transcripts.json").write_text(content)
    with pytest.raises(DataError, match=message):
        read_pairs(tmp_path)
    with pytest.raises(DataError, match="split must be"):
        read_pairs(tmp_path, "test")


def test_info_nce_and_retrieval_against_direct_computations():
    torch.manual_seed(0)
    a = torch.randn(6, 16)
    assert retrieval_accuracy(a, a) == {"pairs": 6, "a_to_b": 1.0, "b_to_a": 1.0, "chance": 1 / 6,
                                        "a_to_b_mean_rank": 1.0, "b_to_a_mean_rank": 1.0, "chance_mean_rank": 3.5}
    rolled = retrieval_accuracy(a, a.roll(1, dims=0))
    assert rolled["a_to_b"] == 0.0 and rolled["b_to_a"] == 0.0 and rolled["a_to_b_mean_rank"] > 1
    # ranks against a direct sort: where does each true partner land among all candidates?
    b = torch.randn(6, 16)
    sim = torch.nn.functional.normalize(a - a.mean(0), dim=-1) @ torch.nn.functional.normalize(b - b.mean(0), dim=-1).T
    direct = [1 + sorted(sim[i].tolist(), reverse=True).index(sim[i, i].item()) for i in range(6)]
    assert retrieval_accuracy(a, b)["a_to_b_mean_rank"] == pytest.approx(sum(direct) / 6)
    # a shared offset on one side (a modality's own mean) changes nothing
    assert retrieval_accuracy(a + 100, a)["a_to_b"] == 1.0
    aligned, shuffled = info_nce(a, 3 * a), info_nce(a, a[torch.randperm(6)])
    assert aligned < shuffled
    # the direct formula: mean of the two cross-entropies over cosine / temperature
    cos = torch.nn.functional.cosine_similarity(a[:, None], a[None], dim=-1) / 0.1
    direct = torch.nn.functional.cross_entropy(cos, torch.arange(6))
    assert torch.allclose(info_nce(a, a), direct, atol=1e-5)


def test_the_alignment_loss_pulls_paired_concepts_together(tmp_path):
    folder = write_pairs(tmp_path / "p", n=16)
    module = tiny_module(model={**STATIC_MODEL, "loss": {"alignment_weight": 1.0}},
                         alignment={"pairs": str(folder), "batch": 8, "units": 4})
    module.setup("fit")
    assert len(module._pair_units) == len(read_pairs(folder, "train"))
    optimizer = torch.optim.AdamW(module.model.codec.encoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):  # outside a Trainer the step is 0: the same 8 pairs each time
        files, transcripts = module.alignment_pairs()
        loss = info_nce(module.model.pooled_concepts(files), module.model.pooled_concepts(transcripts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_alignment_settings_are_checked(tmp_path):
    aligned = {**STATIC_MODEL, "loss": {"alignment_weight": 1.0}}
    with pytest.raises(ConfigError, match="needs alignment.pairs"):
        tiny_module(model=aligned)
    with pytest.raises(ConfigError, match="alignment.batch >= 2"):
        tiny_module(model=aligned, alignment={"pairs": str(tmp_path), "batch": 1})
    with pytest.raises(ConfigError, match="alignment_temperature > 0"):
        tiny_module(model={**STATIC_MODEL, "loss": {"alignment_weight": 1.0, "alignment_temperature": 0.0}})
    assert tiny_module(model=STATIC_MODEL).alignment_pairs() is None  # off: nothing drawn
    module = tiny_module(model=aligned, alignment={"pairs": str(tmp_path)})
    with pytest.raises(ConfigError, match="no transcripts.json"):
        module.setup("fit")


def test_eval_reports_retrieval_and_patch_statistics_per_modality(tmp_path):
    folder = write_pairs(tmp_path / "p", n=24)
    model = tiny_module(model={"segmenter": MODALITY_SEGMENTER}).model.eval()
    model.codec.encoder.calibrate(*pad_batch([b"The cat sat on the mat.", b"RIFF\x00\x00WAVE" + bytes(range(40))]))
    docs = read_documents([str(folder)], None, group_by="modality")
    settings = EvalSettings(max_docs=None, window=4, noise=(0.0,), prompt_units=1, continuation_units=1,
                            generation_docs=1, sampling=Sampling(steps=2), mi_predictions=2, pair_units=4)
    result = evaluate(model, docs, settings, pairs=str(folder), progress=False)
    assert set(result["patching"]) == {"overall", "wav", "text"}  # transcripts.json is a text document
    wav = result["patching"]["wav"]
    assert wav["units"] == 4 * 24 and 0 < wav["patch_bytes"] <= 16 and wav["bpb"] > 0
    retrieval = result["retrieval"]
    assert set(retrieval) == {"train", "valid"}
    assert retrieval["train"]["pairs"] + retrieval["valid"]["pairs"] == 24
    assert retrieval["valid"]["chance"] == 1 / retrieval["valid"]["pairs"]
    assert "Retrieval between paired files" in render_markdown(result)
    assert "mean patch bytes" in render_markdown(result)


def test_retrieval_on_the_shared_speech_pairs_reads_every_transcript():
    folder = shared_file("bytes/speech-en")
    pairs = read_pairs(folder)
    assert len(pairs) == 105 and all(p.data[:4] == b"RIFF" for p in pairs)
    assert len(read_pairs(folder, "valid")) == 21  # 20% held out by the hash of the file name


def test_group_means_are_per_group_means_and_zero_for_empty_groups():
    vectors = torch.arange(12.0).reshape(6, 2)
    means = group_means(vectors, [2, 0, 3, 1])
    assert torch.equal(means, torch.stack([vectors[:2].mean(0), torch.zeros(2), vectors[2:5].mean(0), vectors[5]]))
