"""The generation section's metrics against oracles: the prompt-relevance gap, valid UTF-8, the vocabulary share
and the byte LM's bits per byte of a continuation, each checked on a generator whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from blcm.eval import EvalDocument, EvalSettings
from blcm.eval.generation import generation
from blcm.eval.likelihood import unit_log_probs
from blcm.eval.text import rouge_l, vocabulary
from blt.entropy import EntropyModel, EntropyModelConfig

DOCS = [EvalDocument("toy", [f"Prompt {i} begins here.".encode(), f" Then {word} follows {i}.".encode()])
        for i, word in enumerate(["apples", "rivers", "engines", "castles"])]
SETTINGS = EvalSettings(prompt_units=1, continuation_units=1, generation_docs=4)


def no_bar(items, desc):
    return items


def scored(generate, **kwargs) -> dict:
    return generation(generate, DOCS, SETTINGS, {}, no_bar, **kwargs)["overall"]


def test_an_oracle_has_a_positive_gap_and_one_text_for_every_prompt_has_none():
    oracle = scored(lambda prompt, truth: truth)
    assert oracle["rouge_l"] == pytest.approx(1.0) and oracle["rouge_l_other"] < 1.0
    assert oracle["relevance_gap"] == pytest.approx(1.0 - oracle["rouge_l_other"])
    # The same continuation whatever the prompt: scored against a permutation of the same truths, gap 0.
    same = scored(lambda prompt, truth: b" Then engines follows 2.")
    assert same["rouge_l"] > 0 and same["relevance_gap"] == pytest.approx(0.0, abs=1e-12)


def test_continuations_alike_across_prompts_say_the_prompt_is_ignored():
    same = scored(lambda prompt, truth: b" Then engines follows 2.")
    assert same["rouge_l_alike"] == pytest.approx(1.0)
    oracle = scored(lambda prompt, truth: truth)
    truths = [d.units[1] for d in DOCS]
    expected = sum(rouge_l(truths, truths[1:] + truths[:1])) / len(truths)
    assert oracle["rouge_l_alike"] == pytest.approx(expected) == pytest.approx(oracle["reference_rouge_l_alike"])
    assert oracle["rouge_l_alike"] < 1.0


def test_utf8_share_and_vocabulary_share():
    words = vocabulary([d.units[1] for d in DOCS])
    oracle = scored(lambda prompt, truth: truth, vocabulary=words)
    assert oracle["utf8"] == 1.0 and oracle["in_vocabulary"] == 1.0 and oracle["reference_in_vocabulary"] == 1.0
    soup = iter([b"\xff\xfe broken a", b"qzx then vbn 42", b"Then rivers e", b"\x80"])
    mixed = scored(lambda prompt, truth: next(soup), vocabulary=words)
    assert mixed["utf8"] == 0.5
    # broken qzx then vbn then rivers: then, then, rivers; one-letter words and numbers are not counted
    assert mixed["in_vocabulary"] == pytest.approx(3 / 6)
    assert "in_vocabulary" not in scored(lambda prompt, truth: truth)  # no vocabulary given, no share


def test_byte_lm_bits_per_byte_of_continuations_is_the_direct_sum():
    torch.manual_seed(0)
    lm = EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=64)).eval()
    out = scored(lambda prompt, truth: truth[::-1], byte_lm=lm)
    nats = [-unit_log_probs(lm, [d.units[0]], [d.units[1][::-1]])[0] for d in DOCS]
    total = sum(len(d.units[1]) for d in DOCS)
    assert out["byte_lm_bpb"] == pytest.approx(sum(nats) / total / math.log(2), rel=1e-5)
    truth_nats = [-unit_log_probs(lm, [d.units[0]], [d.units[1]])[0] for d in DOCS]
    assert out["reference_byte_lm_bpb"] == pytest.approx(sum(truth_nats) / total / math.log(2), rel=1e-5)
    empty = scored(lambda prompt, truth: b"", byte_lm=lm)
    assert math.isnan(empty["byte_lm_bpb"]) and empty["utf8"] == 1.0
