"""benchmarks/meaning_space.py on a meaning space: the writing yardstick (which the spelling space of the benchmark
smoke test skips), the same codec read from an export and from a training checkpoint, and the --compare table.

A tiny untrained MeaningCodec on a toy folder shaped like ../shared/data: the figures mean nothing, the plumbing is
what is checked. Each run is a subprocess, as the README runs the script.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from byte_lcm_fixtures import write_corpus

from bridges.meaning_codec import MeaningCodec, MeaningCodecConfig
from bridges.pretrained.meaning import save_meaning_codec

REPO = Path(__file__).resolve().parents[1]
TINY = MeaningCodecConfig(encoder={"byte_dim": 32, "dim": 32, "layers": 1, "heads": 2, "ngram_sizes": [3],
                                   "hash_table_size": 256, "patching": "static"},
                          decoder={"dim": 32, "n_layers": 1, "n_heads": 2, "prefix": 2})


def write_gz(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def run(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "meaning_space.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = Path(args[args.index("--out") + 1])
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    return json.loads(out.read_text())


def test_a_meaning_space_is_measured_from_its_export_and_its_checkpoint_and_compared(tmp_path):
    toy = [json.loads(line) for line in write_corpus(tmp_path / "toy.jsonl", docs=40).read_text().splitlines()]
    data = tmp_path / "shared"
    write_gz(data / "en" / "valid.jsonl.gz", toy[:10])
    write_gz(data / "en" / "train.jsonl.gz", toy[10:])
    write_gz(data / "parallel" / "valid.jsonl.gz",
             [{"en": f"The cat {i} sat on the mat.", "de-DE": f"Die Katze {i} saß auf der Matte.",
               "fr-FR": f"Le chat {i} était sur le tapis.", "source": "p"} for i in range(4)])
    torch.manual_seed(0)
    codec = MeaningCodec(TINY, 16)
    save_meaning_codec(codec, tmp_path / "export")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)  # what tools/ship_meaning.py train keeps of the codec
    torch.save({"model": codec.state_dict(), "codec_config": asdict(TINY), "meaning_dim": 16},
               tmp_path / "runs" / "tiny" / "last.pt")

    common = ["--data", str(data), "--no-minilm", "--no-software", "--locales", "fr-FR"]
    exported = run("--space", f"meaning:{tmp_path / 'export'}", "--train-units", "60", "--core-minutes", "0.01",
                   *common, "--out", str(tmp_path / "export.json"))
    assert exported["name"] == "meaning-export" and exported["concept_dim"] == 16 and not exported["skipped"]
    assert set(exported["semantics"]["xsim"]) == {"fr-FR", "mean", "pool"}  # de-DE left out by --locales
    assert exported["semantics"]["xsim_software"] == {"skipped": "--no-software"}
    writing = exported["writing"]
    assert all(math.isfinite(writing[f"bpb_{k}"]) and writing[f"bpb_{k}"] > 0 for k in ("meaning", "noised", "none"))
    assert len(writing["examples"]) == 5 and all(set(e) == {"original", "rewrite"} for e in writing["examples"])

    checkpoint = run("--space", f"meaning:{tmp_path / 'runs' / 'tiny' / 'last.pt'}", "--skip",
                     "predictability,semantics", *common, "--out", str(tmp_path / "checkpoint.json"))
    assert checkpoint["name"] == "meaning-tiny" and set(checkpoint["skipped"]) == {"predictability", "semantics"}
    assert checkpoint["writing"]["bpb_meaning"] == writing["bpb_meaning"]  # the same codec, read either way
    assert "bpb_context_meaning" not in writing and writing["context_bytes"] == 0

    # the same weights with a decoder that reads 8 bytes before its unit: the rows after the text before appear
    reads = MeaningCodecConfig(**{**asdict(TINY), "decoder": {**asdict(TINY.decoder), "context": 8}})
    torch.save({"model": codec.state_dict(), "codec_config": asdict(reads), "meaning_dim": 16},
               tmp_path / "runs" / "tiny" / "last.pt")
    context = run("--space", f"meaning:{tmp_path / 'runs' / 'tiny' / 'last.pt'}", "--skip",
                  "predictability,semantics", *common, "--out", str(tmp_path / "context.json"))["writing"]
    assert context["context_bytes"] == 8
    assert all(math.isfinite(context[f"bpb_context_{k}"]) for k in ("meaning", "none"))
    assert context["bpb_context_meaning"] != context["bpb_meaning"]  # the text before is read

    table = run("--compare", str(tmp_path / "export.json"), str(tmp_path / "checkpoint.json"),
                "--out", str(tmp_path / "compare.json"))["table"]
    assert set(table) == {"meaning-export", "meaning-tiny"}
    assert table["meaning-export"]["next-concept R², core"] is not None
    assert table["meaning-tiny"]["next-concept R², core"] is None
    assert table["meaning-tiny"]["bits/byte given the meaning"] == writing["bpb_meaning"]


def test_curves_tabulate_the_held_out_rows_of_training_runs(tmp_path):
    for name, errors in (("a", (0.9, 0.7)), ("b", (0.8, 0.6))):
        rows = [{"step": 10 * i, "minutes": 10.0 * i, "translation": 1.0} for i in (1, 2)]  # loss rows: left out
        rows += [{"step": 10 * i, "minutes": 10.0 * i, "unit_retrieval_error": e, "next_accuracy_valid": 0.1,
                  "bpb_meaning": 1.5, "bpb_none": 2.0, "mean_meaning_norm": 0.5}
                 for i, e in zip((1, 2), errors, strict=True)]
        (tmp_path / name).mkdir()
        (tmp_path / name / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run("--curves", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "curves.json"))
    assert {k: [r["unit_retrieval_error"] for r in v] for k, v in out["curves"].items()} == {"a": [0.9, 0.7],
                                                                                              "b": [0.8, 0.6]}
    assert all(r["gain"] == 0.5 for v in out["curves"].values() for r in v)
