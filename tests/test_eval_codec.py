"""blcm.eval.codec: the codec learning curve's measurements, on codecs whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
from test_byte_codec import UNITS, tiny_codec, train_autoencoder

from blcm.eval.codec import codec_scores
from blt.entropy import EntropyModel, EntropyModelConfig


@pytest.fixture(scope="module")
def trained():
    codec = tiny_codec(seed=1)
    train_autoencoder(codec, UNITS, steps=300)
    return codec.eval()


def test_a_codec_that_reconstructs_scores_exact_everywhere(trained):
    torch.manual_seed(0)
    lm = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=128)).eval()
    scores = codec_scores(trained, UNITS, sigmas=(0.01, 5.0), byte_lm=lm, batch_size=2)
    assert scores["units"] == len(UNITS)
    assert scores["exact"] == 1.0 and scores["teacher_forced_byte_accuracy"] == 1.0
    assert scores["exact_sigma_0.01"] == 1.0  # a nudge changes nothing ...
    assert scores["exact_sigma_5"] < 1.0  # ... a shove does
    assert scores["bpb"] < 0.5 < scores["lm_bpb"]  # an untrained LM knows nothing; the concept tells all
    assert -1.0 <= scores["mean_cosine"] <= 1.0 and scores["min_dim_variance"] <= scores["dim_variance"]


def test_an_untrained_codec_scores_like_chance():
    codec = tiny_codec(seed=3).eval()
    scores = codec_scores(codec, UNITS, sigmas=())
    assert scores["exact"] == 0.0 and scores["teacher_forced_byte_accuracy"] < 0.2
    assert scores["bpb"] == pytest.approx(math.log2(260), rel=0.1)  # near uniform over the 260 ids
    assert "lm_bpb" not in scores and "exact_sigma_0.2" not in scores


def test_scores_do_not_depend_on_the_batch_size(trained):
    assert codec_scores(trained, UNITS, batch_size=1) == pytest.approx(codec_scores(trained, UNITS, batch_size=64))


def test_bad_inputs_are_refused(trained):
    with pytest.raises(ValueError, match="at least one unit"):
        codec_scores(trained, [])


def test_training_flops_grow_with_the_decoder():
    from blcm.eval.codec import training_flops_per_byte

    small, large = tiny_codec(), tiny_codec(decoder={"n_layers": 3})
    before = {k: v.clone() for k, v in small.state_dict().items()}
    assert 0 < training_flops_per_byte(small, UNITS) < training_flops_per_byte(large, UNITS)
    assert all(p.grad is None for p in small.parameters())  # the count leaves no gradient behind ...
    for k, v in small.state_dict().items():  # ... nor batch-norm statistics (the uncalibrated threshold is NaN)
        assert torch.allclose(v.float(), before[k].float(), equal_nan=True), k


def test_the_right_bytes_column_counts_teacher_forced_argmaxes(trained):
    from blt.ids import pad_batch

    ids, lengths = pad_batch(UNITS)
    concepts = trained.encode(UNITS)
    concepts[0] = concepts[2]  # unit 0 read with the fox sentence's concept: partly wrong
    scores = trained.decoder(ids, lengths, concepts)
    inputs = torch.nn.functional.pad(ids, (1, 0), value=1)
    logits = trained.decoder.local(inputs, trained.decoder.slots(concepts))
    targets = torch.nn.functional.pad(ids, (0, 1)).scatter(1, lengths[:, None], 2)
    best = logits[..., 4:].argmax(-1) + 4
    greedy = torch.where(logits[..., 2] >= logits[..., 4:].max(-1).values, 2, best)
    manual = ((greedy == targets) & (targets != 0)).sum(1).float()
    assert torch.equal(scores.correct, manual)
    assert torch.equal(scores.correct[1:], (lengths[1:] + 1).float())  # the memorised units: every byte right
    assert scores.correct[0] < lengths[0] + 1 and scores.exact[0] == 0  # unit 0 read from another concept
