"""`blcm eval`: every section on a tiny ByteLCM and a tiny byte LM, the metric wiring against direct
computations and oracles, the report files, and bad input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from byte_lcm_fixtures import tiny_module, write_corpus

from blcm.cli import build_parser, main
from blcm.commands.eval import settings_from
from blcm.data.documents import Document
from blcm.eval import EvalDocument, EvalSettings, evaluate, json_ready, read_documents, render_markdown
from blcm.eval.common import encode_units
from blcm.eval.likelihood import byte_lm_bits_per_byte, mutual_information, unit_log_probs
from blcm.eval.prediction import prediction
from blcm.eval.reconstruction import bucket_name, reconstruction_scores
from blcm.eval.search import crosslingual
from blcm.model import ByteLCM
from blt.entropy import EntropyModel, EntropyModelConfig
from blt.ids import pad_batch
from concept_core.interface import Sampling
from concept_core.metrics import teacher_forced_predictions

FAST = dict(max_docs=8, window=6, noise=(0.0, 0.5), prompt_units=2, continuation_units=2, generation_docs=2,
            sampling=Sampling(steps=2, guidance_scale=1.0), mi_predictions=8)


def no_bar(items, desc):
    return items


@pytest.fixture(scope="module")
def tiny_lcm() -> ByteLCM:
    torch.manual_seed(0)
    model = tiny_module().model.eval()
    units = [b"The cat sat on the mat.", b" A dog ran past the hill!", b" My sister dreamed of the sea."]
    model.codec.encoder.calibrate(*pad_batch(units))
    return model


@pytest.fixture(scope="module")
def byte_lm() -> EntropyModel:
    torch.manual_seed(1)
    return EntropyModel(EntropyModelConfig(dim=32, n_layers=1, n_heads=2, context=64)).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("eval") / "toy.jsonl", docs=12)


def test_every_section_on_a_byte_lcm(tiny_lcm, byte_lm, corpus):
    docs = read_documents([str(corpus)], 8)
    parallel = [{"en": f"Paragraph {i} is here.", "fr-FR": f"Paragraphe {i} est ici."} for i in range(5)]
    result = evaluate(tiny_lcm, docs, EvalSettings(**FAST), byte_lm=byte_lm, parallel=parallel, progress=False)
    windows = [tiny_lcm.units(d.data)[:6] for d in docs]
    units, num_bytes = sum(map(len, windows)), sum(len(u) for w in windows for u in w)
    assert result["data"] == {"documents": 8, "units": units, "bytes": num_bytes, "sources": {"toy": 8}}
    recon = result["reconstruction"]["overall"]
    assert set(recon) == {"sigma=0", "sigma=0.5"} and recon["sigma=0"]["all"]["units"] == units
    for cell in recon["sigma=0"].values():
        assert 0 <= cell["exact"] <= 1 and 0 <= cell["byte_accuracy"] <= 1 and 0 <= cell["chrf"] <= 100
    truth = [u for w in windows for u in w]  # σ = 0, greedy: each window's concepts decoded, by hand
    pairs = list(zip(tiny_lcm.codec.decode(torch.cat([tiny_lcm.encode(d.data)[:6] for d in docs])), truth,
                     strict=True))
    same_bytes = [sum(a == b for a, b in zip(d, t, strict=False)) / max(len(d), len(t), 1) for d, t in pairs]
    assert recon["sigma=0"]["all"]["exact"] == sum(d == t for d, t in pairs) / units
    assert recon["sigma=0"]["all"]["byte_accuracy"] == pytest.approx(sum(same_bytes) / units)
    assert result["reconstruction"]["toy"] == recon  # one source: its group is the whole
    pred = result["prediction"]["overall"]
    predictions, l2_mean, ca_mean = teacher_forced_by_hand(tiny_lcm, [d.data for d in docs], EvalSettings(**FAST))
    assert pred["predictions"] == predictions == units - len(docs)  # every unit but each document's first
    assert pred["l2"] == pytest.approx(l2_mean, rel=1e-4) and pred["ca"] == pytest.approx(ca_mean, abs=1e-6)
    assert 0 <= pred["empty_decodes"] <= 1
    assert pred["round_trip_l2"] >= 0 or pred["empty_decodes"] == 1  # NaN only when nothing decodes
    assert math.isfinite(pred["mi"])
    assert result["next_unit_bpb"]["overall"]["bytes"] == result["byte_lm_next_unit_bpb"]["overall"]["bytes"]
    gen = result["generation"]["overall"]
    assert gen["documents"] == 2 and 0 <= gen["rouge_l"] <= 1
    assert set(result["crosslingual"]) == {"fr-FR", "mean", "pool"}
    assert result["crosslingual"]["pool"] == {"pairs": 5, "xsim_error": 0.8}  # chance: 1 - 1/5
    assert set(result["speed"]) >= {"encode_units_per_s", "decode_units_per_s", "generated_bytes_per_s"}
    json.dumps(json_ready(result), allow_nan=False)  # strict JSON: undefined metrics are null
    report = render_markdown(result)
    assert "| metric | overall | toy |" in report and "xsim error" in report and "ROUGE-L" in report


@torch.no_grad()
def teacher_forced_by_hand(model: ByteLCM, texts: list[bytes], settings: EvalSettings) -> tuple[int, float, float]:
    """(predictions, mean l2, mean CA) of the core's teacher-forced next concepts, through the model's public API
    alone: each document's first ``window`` concepts (ByteLCM.encode), every prefix of 1 .. n-1 of them
    predicted in one seeded batch (core.predict_next), in document then position order (as the suite batches
    them, so that the same sampling noise falls on the same rows). l2: ‖ĉ_i - c_i‖; CA: the share of the other
    targets c_j, bar c_i's neighbours in its document, that lie farther from ĉ_i than c_i does (one pool: the
    predictions are under CA_POOL)."""
    sequences = [model.encode(t)[: settings.window] for t in texts]
    sequences = [s for s in sequences if len(s) >= 2]
    n = max(map(len, sequences))
    rows, prefixes, targets, where = [], [], [], []
    for b, s in enumerate(sequences):
        padded = torch.cat([s, s.new_zeros(n - len(s), s.shape[1])])
        for k in range(1, len(s)):
            rows.append(padded)
            prefixes.append(torch.arange(n) < k)
            targets.append(s[k])
            where.append((b, k))
    pred = model.core.predict_next(torch.stack(rows), torch.stack(prefixes), settings.sampling,
                                   torch.Generator().manual_seed(settings.seed))
    dist = [[math.dist(p.tolist(), t.tolist()) for t in targets] for p in pred]  # dist[i][j] = ‖ĉ_i - c_j‖
    count = len(targets)
    ca = []
    for i, (b, k) in enumerate(where):
        others = [j for j, (b2, k2) in enumerate(where) if j != i and not (b2 == b and abs(k2 - k) == 1)]
        ca.append(sum(dist[i][j] > dist[i][i] for j in others) / len(others))
    return count, sum(dist[i][i] for i in range(count)) / count, sum(ca) / count


def test_the_byte_lm_scores_the_same_bytes_as_a_byte_lcm_with_the_same_units(tiny_lcm, byte_lm, corpus):
    docs = read_documents([str(corpus)], 8)
    settings = EvalSettings(**FAST, baseline_segmenter=tiny_lcm.segmenter.to_config())
    result = evaluate(byte_lm, docs, settings, progress=False)
    assert set(result) >= {"next_unit_bpb", "generation", "speed"} and "reconstruction" not in result
    lcm_docs = [EvalDocument(d.source, tiny_lcm.units(d.data)[:6]) for d in docs]
    assert result["next_unit_bpb"] == byte_lm_bits_per_byte(byte_lm, lcm_docs)
    gen = result["generation"]["overall"]
    assert gen["generated_bytes"] <= gen["reference_bytes"]  # the byte LM's budget is the true continuation's length


def test_byte_lm_bits_per_byte_is_the_direct_sum(byte_lm):
    units = [b"First one.", b" Second unit here.", b" Third."]
    got = byte_lm_bits_per_byte(byte_lm, [EvalDocument("s", units)])["overall"]
    doc = b"".join(units)
    logp = byte_lm.log_probs(*pad_batch([doc]))[0]
    expected = -logp[len(units[0]) :].sum() / (len(doc) - len(units[0])) / math.log(2)
    assert got["bytes"] == len(doc) - len(units[0]) and got["units"] == 2
    assert got["bpb"] == pytest.approx(float(expected), rel=1e-5)


def test_mutual_information_is_zero_without_context_and_nan_for_empty_units(byte_lm):
    mi = mutual_information(byte_lm, [b"", b"some context. ", b"x"], [b"a unit", b"a unit", b""])
    assert mi[0] == pytest.approx(0.0, abs=1e-6)
    with_context = unit_log_probs(byte_lm, [b"some context. "], [b"a unit"])[0]
    alone = unit_log_probs(byte_lm, [b""], [b"a unit"])[0]
    assert mi[1] == pytest.approx((with_context - alone) / 6)
    assert math.isnan(mi[2])


def test_reconstruction_scores_of_an_oracle_and_buckets():
    rows = [{"true": b"abc", "decoded": b"abc"}, {"true": b"hello world", "decoded": b"hello world"}]
    assert reconstruction_scores(rows) == {"units": 2, "exact": 1.0, "byte_accuracy": 1.0, "chrf": 100.0}
    half = reconstruction_scores([{"true": b"abcd", "decoded": b"abXY"}])
    assert half["exact"] == 0.0 and half["byte_accuracy"] == 0.5
    assert [bucket_name(n) for n in (1, 64, 65, 128, 129, 256, 257)] == \
        ["1-64", "1-64", "65-128", "65-128", "129-256", "129-256", ">256"]


def test_xsim_is_zero_for_copies_and_counts_swaps(tiny_lcm):
    records = [{"en": t, "de-DE": t} for t in ("The cat sat.", "A dog ran far away!", "My sister spoke.",
                                               "Numbers 12345 and more 67890.")]
    assert crosslingual(tiny_lcm, records, no_bar)["de-DE"] == {"pairs": 4, "xsim_error": 0.0}
    swapped = [{"en": r["en"], "de-DE": records[(i + 1) % 4]["en"]} for i, r in enumerate(records)]
    assert crosslingual(tiny_lcm, swapped, no_bar)["de-DE"]["xsim_error"] == 1.0  # each finds the wrong one


def test_settings_are_checked(tiny_lcm):
    docs = [Document(b"One. Two.", "s", "k")]
    for bad in (dict(window=1), dict(noise=(-1.0,)), dict(prompt_units=0), dict(max_docs=0)):
        with pytest.raises(ValueError):
            evaluate(tiny_lcm, docs, EvalSettings(**{**FAST, **bad}), progress=False)


# -- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tiny_lcm, byte_lm, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("exports")
    return tiny_lcm.save_pretrained(root / "lcm"), byte_lm.save_pretrained(root / "lm")


def eval_args(*flags: str):
    return build_parser().parse_args(["eval", "--model", "m", "--data", "d.jsonl", "--out", "r.json", *flags])


def test_eval_flags_default_to_the_settings_and_explain_each_one(capsys):
    assert settings_from(eval_args()) == EvalSettings()  # each default lives once, in EvalSettings
    given = settings_from(eval_args("--max-docs", "0", "--pair-units", "0", "--parallel-max", "3", "--noise", "0",
                                    "0.3", "--steps", "7", "--guidance", "2.5", "--unit-bytes", "64"))
    assert given == EvalSettings(max_docs=None, pair_units=None, parallel_max=3, noise=(0.0, 0.3),
                                 sampling=Sampling(steps=7, guidance_scale=2.5),
                                 baseline_segmenter={"kind": "sentence", "max_bytes": 64})
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, help in [("--max-docs", "(default 64; 0 = all)"), ("--window", "(default 16, tiny's window)"),
                       ("--noise", "(default 0 0.1 0.2 0.5)"), ("--steps", "steps (default 20)"),
                       ("--guidance", "(1 = off; default 1)"), ("--unit-bytes", "(default 128, configs/tiny.yaml's)"),
                       ("--parallel-max", "(default 0 = all)"), ("--mi-context", "(default 512)")]:
        assert f"{flag} " in text and help in text
    assert "reconstruction exact match" in text  # the description explains the metrics


FAST_ARGS = ["--max-docs", "4", "--window", "5", "--noise", "0", "--generation-docs", "1", "--steps", "2",
             "--prompt-units", "1", "--continuation-units", "1", "--mi-predictions", "4", "--no-progress"]


def test_eval_command_writes_json_markdown_and_tensorboard(exported, corpus, tmp_path, capsys):
    lcm, lm = exported
    out = tmp_path / "res" / "lcm.json"
    assert main(["eval", "--model", str(lcm), "--data", str(corpus), "--out", str(out), "--byte-lm", str(lm),
                 "--tensorboard", str(tmp_path / "tb"), *FAST_ARGS]) == 0
    result = json.loads(out.read_text())
    assert result["data"]["documents"] == 4 and result["inputs"]["byte_lm"] == str(lm)
    assert out.with_suffix(".md").read_text() in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "eval/reconstruction/sigma=0/all/exact/overall" in events.Tags()["scalars"]
    assert "eval/prediction/ca/toy" in events.Tags()["scalars"] and "eval/report" in str(events.Tags())
    out_lm = tmp_path / "lm.json"
    assert main(["eval", "--model", str(lm), "--data", str(corpus), "--out", str(out_lm), *FAST_ARGS]) == 0
    assert json.loads(out_lm.read_text())["model"]["type"] == "EntropyModel"


def test_eval_bad_input_is_one_line_and_exit_2(exported, corpus, tmp_path, capsys):
    lcm, lm = exported
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text(json.dumps({"body": "x"}) + "\n")
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt"):
        pass
    not_model = tmp_path / "not_model"
    not_model.mkdir()
    not_parallel = tmp_path / "parallel.jsonl"
    not_parallel.write_text('["en", "fr-FR"]\n')
    cases = [
        (["--model", str(not_model), "--data", str(corpus)], "cannot load"),
        (["--model", str(lcm), "--data", str(no_text)], "no 'text' field"),
        (["--model", str(lcm), "--data", str(empty)], "no documents"),
        (["--model", str(lcm), "--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--model", str(lcm), "--data", str(corpus), "--byte-lm", str(lcm)], "is a ByteLCM"),
        (["--model", str(lcm), "--data", str(corpus), "--window", "1"], "window"),
        (["--model", str(lm), "--data", str(corpus), "--byte-lm", str(lm)], "ByteLCM only"),
        (["--model", str(lcm), "--data", str(corpus), "--parallel", str(not_parallel)], "not a JSON object"),
        (["--model", str(lcm), "--data", str(corpus), "--steps", "100000"], "diffusion timesteps"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--out", str(tmp_path / "r.json"), "--no-progress"]) == 2
        # a skipped line is also logged as it is read (whether that shows depends on the log handler's stream)
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING blcm:")]
        assert len(err) == 1 and err[0].startswith("blcm eval: error:") and message in err[0], err
    assert main(["eval", "--model", str(lcm), "--data", str(corpus), "--out", str(tmp_path / "r.txt")]) == 2
    assert not (tmp_path / "r.json").exists()  # nothing written on an error


def test_documents_are_taken_in_turn_from_each_source(tmp_path):
    path = tmp_path / "mixed.jsonl"
    records = [{"source": "a", "text": f"a{i}."} for i in range(5)] + [{"source": "b", "text": "b0."},
                                                                       {"source": "c", "text": ""}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert [d.data for d in read_documents([str(path)], 3)] == [b"a0.", b"b0.", b"a1."]
    assert len(read_documents([str(path)], None)) == 6  # the empty one is left out


def test_generate_with_a_byte_lm_writes_bytes(exported, tmp_path, capsys):
    _, lm = exported
    out = tmp_path / "gen.bin"
    assert main(["generate", "--model", str(lm), "--max-bytes", "5", "--seed", "0", "--temperature", "1",
                 "--out", str(out), "Hello"]) == 0
    first = out.read_bytes()
    assert len(first) <= 5
    assert main(["generate", "--model", str(lm), "--max-bytes", "5", "--seed", "0", "--temperature", "1",
                 "--out", str(out), "Hello"]) == 0
    assert out.read_bytes() == first  # seeded
    assert main(["generate", "--model", str(lm), "--max-bytes", "5000", "Hello"]) == 2
    assert "max_new_bytes must be between 1 and 63" in capsys.readouterr().err


def test_prediction_metrics_equal_a_direct_computation(tiny_lcm, corpus):
    """l2, copy-last, the mean concept and the decoder's bits per byte, recomputed here from the same seeded
    predictions with plain tensor arithmetic (CA is recomputed by hand in test_every_section_on_a_byte_lcm)."""
    docs = [EvalDocument("toy", tiny_lcm.units(d.data)[:6]) for d in read_documents([str(corpus)], 8)]
    docs = [d for d in docs if len(d.units) >= 2]
    settings = EvalSettings(**{**FAST, "mi_predictions": 0})
    concepts = encode_units(tiny_lcm, [u for d in docs for u in d.units])
    metrics, bpb = prediction(tiny_lcm, docs, concepts, settings, None, no_bar)
    sequences = torch.nn.utils.rnn.pad_sequence(concepts.split([len(d.units) for d in docs]), batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(d.units), dtype=torch.bool) for d in docs],
                                           batch_first=True)
    tf = teacher_forced_predictions(tiny_lcm.core, sequences, mask, settings.sampling,
                                    torch.Generator().manual_seed(settings.seed))
    overall = metrics["overall"]
    assert overall["predictions"] == len(tf.pred) == sum(len(d.units) - 1 for d in docs)
    assert overall["l2"] == pytest.approx(float((tf.pred - tf.target).norm(dim=1).mean()), rel=1e-5)
    assert overall["copy_l2"] == pytest.approx(float((tf.previous - tf.target).norm(dim=1).mean()), rel=1e-5)
    centre = torch.stack([concepts[sum(len(d.units) for d in docs[:b]) + k]
                          for b, k in zip(tf.doc.tolist(), tf.position.tolist(), strict=True)]).mean(0)
    assert overall["mean_l2"] == pytest.approx(float((tf.target - centre).norm(dim=1).mean()), rel=1e-5)
    targets = [d.units[k] for d, k in zip([docs[b] for b in tf.doc.tolist()], tf.position.tolist(), strict=True)]
    scores = tiny_lcm.codec.decoder(*pad_batch(targets), tf.pred)
    expected = float(scores.nats.sum()) / sum(map(len, targets)) / math.log(2)
    assert bpb["overall"]["bpb"] == pytest.approx(expected, rel=1e-5)
    assert math.isnan(overall["mi"]) and overall["mi_predictions"] == 0


def test_a_core_that_knows_the_next_concept_scores_l2_0_ca_1_par_1(tiny_lcm):
    """An oracle core (it returns the concept right after each prefix, which it is handed with the padding):
    the answers are known. The units are all distinct, so every other target is strictly farther."""
    class Oracle:
        def predict_next(self, concepts, mask, sampling=None, generator=None):
            return concepts[torch.arange(len(concepts)), mask.sum(1)]

    docs = [EvalDocument("toy", [f" Unit {d}.{k} of the test.".encode() for k in range(n)])
            for d, n in enumerate((4, 2, 5))]
    concepts = encode_units(tiny_lcm, [u for d in docs for u in d.units])
    oracle = SimpleNamespace(core=Oracle(), codec=tiny_lcm.codec, device=tiny_lcm.device)
    metrics, _ = prediction(oracle, docs, concepts, EvalSettings(**{**FAST, "mi_predictions": 0}), None, no_bar)
    overall = metrics["overall"]
    assert overall["predictions"] == 3 + 1 + 4
    assert overall["l2"] == 0 and overall["ca"] == 1 and overall["par"] == pytest.approx(1)


def test_metrics_by_modality_for_a_folder_of_any_files(exported, corpus, tmp_path):
    lcm, _ = exported
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(200)))
    (folder / "b.txt").write_bytes(b"The cat sat on the mat. A dog ran past the hill!")
    docs = read_documents([str(folder)], None, group_by="modality")
    assert [d.source for d in docs] == ["wav", "text"]  # files in path order, grouped by their content
    out = tmp_path / "m.json"
    assert main(["eval", "--model", str(lcm), "--data", str(folder), "--out", str(out), "--group-by", "modality",
                 *FAST_ARGS]) == 0
    result = json.loads(out.read_text())
    assert set(result["reconstruction"]) == {"overall", "text", "wav"}
    assert result["data"]["sources"] == {"text": 1, "wav": 1}
    with pytest.raises(ValueError, match="group_by"):
        read_documents([str(folder)], None, group_by="colour")
