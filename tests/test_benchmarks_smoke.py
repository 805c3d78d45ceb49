"""Every benchmarks/*.py script runs, on a tiny setting, and writes the JSON it promises: no benchmark the README names
can rot silently.

Each script runs as the README runs it (``python benchmarks/X.py ...`` from the repository root, in a subprocess)
on inputs built here once per session: a prepared toy corpus, a tiny `blcm fit` run (metrics.jsonl, a snapshot,
an export) with its `blcm eval` JSON, a tiny entropy model, tiny copies of configs/tiny.yaml and
configs/bytegpt-tiny.yaml, and a folder shaped like ../shared/data (en, multilingual, parallel, one held-out WAV
and PNG). Nothing reads ../shared or the network, and every output goes to the test's tmp_path.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import string
import struct
import subprocess
import sys
import wave
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from byte_lcm_fixtures import write_corpus, write_fit_config

from blcm.data.corpus import in_valid_split
from blcm.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
EVAL_ARGS = ["--max-docs", "4", "--window", "5", "--noise", "0", "0.5", "--generation-docs", "1", "--steps", "2",
             "--prompt-units", "1", "--continuation-units", "1", "--mi-predictions", "4", "--no-progress"]


# -- inputs ---------------------------------------------------------------------------------------


def write_gz(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def held_out_name(stem: str, ext: str) -> str:
    """A file name in the 10% held-out split (blcm prepare --valid-percent 10, benchmarks/modality_patches.py)."""
    names = (f"{stem}-{i}.{ext}" for i in range(1000))
    return next(name for name in names if in_valid_split(name, 10))


def write_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 7))) for i in range(800)))


def write_png(path: Path, width: int = 24, height: int = 16) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 7 + y * 13) % 256 for x in range(width)) for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("benchmark-inputs")


@pytest.fixture(scope="session")
def toy_corpus(smoke_root) -> Path:
    return write_corpus(smoke_root / "toy.jsonl", docs=48)


@pytest.fixture(scope="session")
def prepared(smoke_root, toy_corpus) -> Path:
    """The toy corpus prepared: units of at most 64 bytes, 20% of the documents in valid."""
    prepare([toy_corpus], smoke_root / "prepared", max_unit_bytes=64, valid_percent=20, shard_docs=16, progress=False)
    return smoke_root / "prepared"


@pytest.fixture(scope="session")
def shared_like(smoke_root, toy_corpus) -> Path:
    """A folder laid out as ../shared/data, a few documents of each kind."""
    root = smoke_root / "shared"
    toy = [json.loads(line) for line in toy_corpus.read_text().splitlines()]
    write_gz(root / "en" / "valid.jsonl.gz", toy[:12])
    write_gz(root / "en" / "train.jsonl.gz", toy[12:])
    write_gz(root / "multilingual" / "valid.jsonl.gz",
             [{"text": "Le chat dort sur le tapis. Il fait beau.", "source": "wiki", "lang": "fr"},
              {"text": "El perro corre por la colina.", "source": "wiki", "lang": "es"}])
    write_gz(root / "parallel" / "valid.jsonl.gz",
             [{"en": f"The cat {i} sat on the mat.", "fr-FR": f"Le chat {i} était sur le tapis.", "source": "p"}
              for i in range(4)])
    for folder, stem, ext, write in (("speech-en", "speech", "wav", write_wav), ("images", "image", "png", write_png)):
        (root / "bytes" / folder).mkdir(parents=True)
        write(root / "bytes" / folder / held_out_name(stem, ext))
    return root


@pytest.fixture(scope="session")
def fit_run(smoke_root, prepared) -> Path:
    """A tiny `blcm fit` (8 steps: entropy, autoencoder and joint stages) with MetricsHistory and Snapshots:
    -> its log dir (metrics.jsonl, snapshots/); its export is ``<log dir>/../../../export``."""
    from blcm.cli import main

    root = smoke_root / "fit"
    root.mkdir()
    config = write_fit_config(root / "fit.yaml", prepared, max_steps=8, val_check_interval=4)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"].append({"class_path": "blcm.callbacks.Snapshots", "init_args": {"every_minutes": 1}})
    config.write_text(yaml.safe_dump(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLCM_HOME", str(smoke_root / "blcm-home"))
        assert main(["fit", "--config", str(config)]) == 0
    (run,) = (root / "runs" / "tiny").glob("version_*")
    assert (run / "metrics.jsonl").is_file() and list((run / "snapshots").glob("step-*/snapshot.json"))
    return run


@pytest.fixture(scope="session")
def lcm_export(fit_run) -> Path:
    return fit_run.parents[2] / "export"


def blcm_eval(model: Path, out: Path, *flags: str) -> Path:
    from blcm.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLCM_HOME", str(out.parent / "blcm-home"))
        assert main(["eval", "--model", str(model), "--out", str(out), *EVAL_ARGS, *flags]) == 0
    return out


@pytest.fixture(scope="session")
def lcm_eval(lcm_export, toy_corpus, shared_like) -> Path:
    return blcm_eval(lcm_export, lcm_export.parent / "eval-lcm.json", "--data", str(toy_corpus),
                     "--parallel", str(shared_like / "parallel" / "valid.jsonl.gz"))


@pytest.fixture(scope="session")
def lm_eval(tiny_entropy_model_dir, toy_corpus, smoke_root) -> Path:
    """`blcm eval` of a byte LM (what a ByteGPT export is: an EntropyModel)."""
    return blcm_eval(tiny_entropy_model_dir, smoke_root / "eval-lm.json", "--data", str(toy_corpus))


@pytest.fixture(scope="session")
def lcm_config(smoke_root) -> Path:
    """configs/tiny.yaml (the shipped chunk codec, frozen) with a 32-wide core and 2 windows of 4 units a step."""
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["model"]["init_args"]["model"]["core"] = {"variant": "two_tower", "model_dim": 32, "context_layers": 1,
                                                     "denoiser_layers": 1, "n_heads": 2}
    config["model"]["init_args"]["export_dir"] = str(smoke_root / "unused-export")
    config["data"]["init_args"].update(max_units=4, batch_size=2)
    (smoke_root / "lcm.yaml").write_text(yaml.safe_dump(config))
    return smoke_root / "lcm.yaml"


@pytest.fixture(scope="session")
def lm_config(smoke_root) -> Path:
    """configs/bytegpt-tiny.yaml with a 1-layer, 32-wide model and a 64-byte context."""
    config = yaml.safe_load((REPO / "configs" / "bytegpt-tiny.yaml").read_text())
    config["model"]["init_args"]["model"] = {"dim": 32, "n_layers": 1, "n_heads": 2, "context": 64}
    config["data"]["init_args"].update(seq_len=64, batch_size=2)
    (smoke_root / "lm.yaml").write_text(yaml.safe_dump(config))
    return smoke_root / "lm.yaml"


# -- what each script must write ------------------------------------------------------------------


def has(tree: dict, *keys: str) -> dict:
    missing = set(keys) - set(tree)
    assert not missing, f"missing {sorted(missing)} in {sorted(tree)}"
    return tree


def finite(*values) -> None:
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), values


def check_codec_curve(r: dict) -> None:
    assert has(r, "settings", "rows")["settings"]["units"] == 8 and r["rows"]
    last = has(r["rows"][-1], "run", "minutes", "step", "exact", "exact_sigma_0.2", "teacher_forced_byte_accuracy",
               "bpb", "lm_bpb", "mean_cosine", "mflops_per_byte", "units_per_s")
    assert last["step"] == 8 and 0 <= last["exact"] <= 1
    finite(last["bpb"], last["lm_bpb"], last["units_per_s"])


def check_codec_speed(r: dict) -> None:
    rows = has(r, "settings", "rows")["rows"]
    assert {(row["codec"].split()[0], row["op"]) for row in rows} == \
        {(c, op) for c in ("chunk", "autoregressive") for op in ("encode", "decode")}
    for row in rows:
        assert has(row, "params", "units_per_s_min", "units_per_s_median")["units"] == 8
        finite(row["units_per_s_median"])


def check_concept_spaces(r: dict) -> None:
    assert set(has(r, "runs", "table")["table"]) == {"byte", "lm"}
    byte = has(r["table"]["byte"], "training minutes", "steps", "trained parameters", "l2", "CA", "ROUGE-L",
               "next-unit bits/byte", "xsim error, mean over locales", "encode units/s")
    assert byte["steps"] == 8
    for label in ("l2", "CA", "ROUGE-L", "next-unit bits/byte", "xsim error, mean over locales", "encode units/s"):
        assert byte[label] is not None, f"not found in the ByteLCM's eval JSON: {label}"
    for label in r["table"]["lm"]:  # a row is kept only where some run has the metric
        assert byte[label] is not None or r["table"]["lm"][label] is not None, label
    assert r["table"]["lm"]["next-unit bits/byte"] is not None


def check_core_generation(r: dict) -> None:
    results = has(r, "torch", "threads", "args", "results")["results"]
    variants = [e["variant"] for e in results]
    assert len(set(variants)) == len(variants)
    assert set(variants) >= {"base", "one_tower", "two_tower", "quant", "energy"}
    for e in results:
        has(e, "params", "concepts_per_s_best", "concepts_per_s_median", "per_context")
        assert e["params"] > 0 and e["concepts_per_s_best"] > 0
        finite(*has(e["per_context"]["4"], "extend_ms", "reread_ms", "sample_ms").values())


def check_curve(rows: list) -> None:
    assert [row["step"] for row in rows] == [4, 8]
    has(rows[-1], "minutes", "val/bpb", "val/l2", "val/ca")


def check_doc_length(r: dict) -> None:
    (row,) = has(r, "config", "data", "rows")["rows"]
    assert has(row, "bytes", "min_s", "median_s", "s_per_unit", "peak_rss_mib", "step_rss_growth_mib")["units"] == 4
    finite(row["median_s"], row["peak_rss_mib"])


def check_entropy_bpb(r: dict) -> None:
    rows = has(r, "model", "data", "rows")["rows"]
    assert [row["source"] for row in rows] == ["toy", "all"] and rows[-1]["docs"] == 12 and rows[-1]["bytes"] > 0
    finite(rows[-1]["bpb"])


def check_meaning_space(r: dict) -> None:
    assert has(r, "name", "settings", "units", "seconds", "machine", "skipped")["units"]["train"] >= 100
    prediction = has(r["predictability"], "core", "copy_last", "blend", "targets")
    finite(*(prediction[k][m] for k in ("core", "copy_last", "blend") for m in ("r2", "ca")), prediction["blend"]["a"])
    assert set(r["semantics"]["xsim"]) == {"fr-FR", "mean", "pool"} and "writing" in r["skipped"]  # not a meaning


def check_modality_patches(r: dict) -> None:
    rows = has(r, "rows", "machine", "command")["rows"]
    assert [(row["model"], row["modality"]) for row in rows] == [("tiny", m) for m in ("text", "wav", "png")]
    for row in rows:
        has(row, "units", "mean_patch_bytes", "encoder_mflops_per_byte", "train_mflops_per_byte",
            "teacher_forced_byte_accuracy", "bpb", "exact")
        assert row["units"] == 4 and row["mean_patch_bytes"] >= 1
        finite(row["bpb"], row["encoder_mflops_per_byte"])


def check_modality_stats(r: dict) -> None:
    assert set(has(r, "model", "text_threshold", "modalities")["modalities"]) == {"text", "wav", "png"}
    for row in r["modalities"].values():
        finite(*has(row, "docs", "bytes", "bits_per_byte", "mean_entropy_nats", "patch_size_at_text_threshold",
                    "own_threshold").values())


def check_naive_codec(r: dict) -> None:
    curve = has(r, "settings", "curve")["curve"]
    assert len(curve) >= 2 and curve[-1]["step"] > 0
    finite(*has(curve[-1], "minutes", "bytes", "exact", "exact_sigma_0.2", "bpb", "bpb_shuffled").values())


def check_padding_waste(r: dict) -> None:
    rows = has(r, "settings", "rows")["rows"]
    assert [row["batches"] for row in rows] == ["random (no bucketing)", "bucketed, costs('max_bytes')",
                                                "bucketed, costs('padded_bytes')"]
    for row in rows:
        assert 0 <= has(row, "windows", "units_pad_percent", "doc_mask_pad_percent", "floor_percent")["floor_percent"] \
            <= row["units_pad_percent"] < 100


def check_paradigms(r: dict) -> None:
    has(r, "threads", "gemm_flops_per_s", "parameters", "training", "generation", "settings")
    for name in ("ByteLCM", "ByteGPT"):
        finite(*has(r["training"][name], "bytes_per_step", "median_s", "bytes_per_s", "flops_per_byte",
                    "share_of_gemm").values())
        assert has(r["generation"][name], "bytes", "seconds", "bytes_per_s")["bytes"] > 0


def check_patching(r: dict) -> None:
    has(r, "machine", "args", "model", "input", "measurements", "skipped_modes")
    names = [m["name"] for m in r["measurements"]]
    for mode in ("entropy", "monotonic", "space", "static"):
        assert f"patching: {mode}" in names or mode in r["skipped_modes"]
    assert names[0].startswith("GEMM") and any(n.startswith("end to end") for n in names)
    assert r["input"]["bytes"] == 2048 and r["model"]["num_params"] > 0
    finite(*(m["rate_best"] for m in r["measurements"]))


def check_precision(r: dict) -> None:
    assert has(r, "device", "threads", "stage", "steps", "results")["steps"] == 1
    assert set(r["results"]) == {"fp32", "bf16 autocast"}
    for row in r["results"].values():
        finite(*has(row, "min_s", "median_s").values())


def check_unit_lengths(r: dict) -> None:
    rows = has(r, "benchmark", "args", "rows")["rows"]
    assert {row["corpus"] for row in rows} == {"en/valid", "en/train", "multilingual/valid", "parallel/valid"}
    assert {row["group"] for row in rows if row["corpus"] == "parallel/valid"} >= {"all", "lang=en", "lang=fr-FR"}
    for row in rows:
        has(row, "units", "mean", "p50", "p90", "p99", "capped", "le_128", "over_cap")
    assert next(row for row in rows if row["corpus"] == "en/train" and row["group"] == "all")["docs"] == 10


def check_wallclock(r: dict) -> None:
    assert set(has(r, "runs", "table")["table"]) == {"ByteLCM", "ByteGPT"}
    for row in r["table"].values():
        has(row, "training minutes", "steps", "parameters", "val/bpb in training*", "next-unit bits/byte", "ROUGE-L")
        unread = [label for label, value in row.items() if value is None]
        assert not unread, f"not found in an eval JSON: {unread}"


# script -> (its arguments, with {fixture} placeholders and {out} = the test's tmp_path; the JSON it writes; check)
SMOKE: dict[str, tuple[list[str], str, Callable]] = {
    "codec_curve": (["{fit_run}", "--data", "{prepared}", "--units", "8", "--max-bytes", "64",
                     "--out", "{out}/codec-curve"], "codec-curve.json", check_codec_curve),
    "codec_speed": (["--input", "{shared_like}/en/valid.jsonl.gz", "--units", "8", "--batch-size", "8",
                     "--repeats", "1", "--out", "{out}/codec-speed"], "codec-speed.json", check_codec_speed),
    "concept_spaces": (["--run", "byte", "{fit_run}", "{lcm_eval}", "--run", "lm", "{fit_run}", "{lm_eval}",
                        "--out", "{out}/concept-spaces.json"], "concept-spaces.json", check_concept_spaces),
    "core_generation": (["--steps", "2", "--batch", "1", "--new", "1", "--contexts", "4", "--repeats", "1",
                         "--out", "{out}/core_generation.json"], "core_generation.json", check_core_generation),
    "curve": (["{fit_run}/metrics.jsonl", "--out", "{out}/curve"], "curve.json", check_curve),
    "doc_length": (["--data", "{prepared}", "--config", "{lcm_config}", "--lengths", "4", "--steps", "1",
                    "--threads", "1", "--out", "{out}/doc_length.json"], "doc_length.json", check_doc_length),
    "entropy_bpb": (["--model", "{tiny_entropy_model_dir}", "--data", "{shared_like}/en/valid.jsonl.gz",
                     "--out", "{out}/entropy_bpb.json"], "entropy_bpb.json", check_entropy_bpb),
    "meaning_space": (["--space", "spelling", "--data", "{shared_like}", "--train-units", "100", "--core-minutes",
                       "0.02", "--no-minilm", "--no-software", "--out", "{out}/meaning-space.json"],
                      "meaning-space.json", check_meaning_space),
    "modality_patches": (["--model", "tiny={lcm_export}", "--data", "{shared_like}", "--units", "4",
                          "--out", "{out}/modality-patches.json"], "modality-patches.json", check_modality_patches),
    "modality_stats": (["{shared_like}/bytes", "{shared_like}/en/valid.jsonl.gz", "--model", "{tiny_entropy_model_dir}",
                        "--docs", "2", "--max-bytes", "512", "--threads", "1", "--out", "{out}/modality_stats.json"],
                       "modality_stats.json", check_modality_stats),
    "naive_codec": (["--data", "{prepared}", "--dim", "16", "--encoder-layers", "1", "--decoder-layers", "1",
                     "--slots", "2", "--concept-dim", "16", "--segment", "32", "--batch", "4", "--minutes", "0.02",
                     "--eval-every", "0.01", "--out", "{out}/naive.json"], "naive.json", check_naive_codec),
    "padding_waste": (["{prepared}", "--max-units", "4", "--batch-size", "4", "--out", "{out}/padding_waste.json"],
                      "padding_waste.json", check_padding_waste),
    "paradigms": (["--data", "{prepared}", "--lcm-config", "{lcm_config}", "--lm-config", "{lm_config}",
                   "--steps", "1", "--repeats", "1", "--prompts", "1", "--gen-units", "1", "--threads", "1",
                   "--out", "{out}/paradigms.json"], "paradigms.json", check_paradigms),
    "patching": (["--model", "{tiny_entropy_model_dir}", "--input", "{shared_like}/en/valid.jsonl.gz",
                  "--bytes", "2048", "--model-bytes", "512", "--repeats", "1", "--threads", "1",
                  "--out", "{out}/patching.json"], "patching.json", check_patching),
    "precision": (["--data", "{prepared}", "--config", "{lcm_config}", "--steps", "1", "--threads", "1",
                   "--out", "{out}/precision.json"], "precision.json", check_precision),
    "unit_lengths": (["--data", "{shared_like}", "--max-docs", "10", "--max-bytes", "64", "--by-lang",
                      "--out", "{out}/unit_lengths.json"], "unit_lengths.json", check_unit_lengths),
    "wallclock": (["--lcm-run", "{fit_run}", "--lcm-eval", "{lcm_eval}", "--lm-run", "{fit_run}",
                   "--lm-eval", "{lm_eval}", "--out", "{out}/wallclock.json"], "wallclock.json", check_wallclock),
}


def test_every_benchmark_has_a_smoke_entry():  # every script: a helper module (no __main__) runs inside one
    assert set(SMOKE) == {p.stem for p in BENCHMARKS.glob("*.py") if '__name__ == "__main__"' in p.read_text()}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_and_writes_its_json(script, request, tmp_path):
    template, written, check = SMOKE[script]
    names = {name for arg in template for _, name, _, _ in string.Formatter().parse(arg) if name}
    values = {name: tmp_path if name == "out" else request.getfixturevalue(name) for name in names}
    args = [arg.format(**values) for arg in template]
    # One thread (the machine may be shared), the repository importable, the test's own BLCM_HOME (conftest).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = tmp_path / written
    assert out.is_file(), f"{script} wrote no {out.name}; wrote {sorted(p.name for p in tmp_path.iterdir())}"
    check(json.loads(out.read_text()))
