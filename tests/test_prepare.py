"""`blcm prepare` (segmented numpy shards) and the unit windows, collation and bucketing over them."""

import gzip
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from blcm import DataError
from blcm.batch import UnitBatch
from blcm.cli import main
from blcm.data import prepare as prep
from blcm.data.corpus import in_valid_split
from blcm.data.documents import iter_records
from blcm.data.sampler import BucketBatchSampler
from blcm.data.units import PreparedUnits, UnitDataModule, collate_units
from blt.ids import EOD, OFFSET, PAD
from primitives.atomic import atomic_directory
from tests.conftest import shared_file

TEXTS = [
    "Fellow citizens. We meet today in a time of change! Is it so? It is.",
    "Short.",
    "A paragraph.\n\nAnother paragraph, with a clause; and more words here. Done.",
    "Ünïcödé text — with dashes. 日本語の文。もう一つ。",
    "x" * 300,  # longer than the unit cap: hard cuts
] + [f"Document number {i}. It has two sentences." for i in range(20)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


@pytest.fixture
def corpus(tmp_path) -> tuple[list[Path], list[tuple[bytes, str]]]:
    """A JSONL.gz file (with and without "source"), a plain text file, and a folder with a binary file."""
    src = tmp_path / "src"
    (src / "folder" / "sub").mkdir(parents=True)
    records = [{"id": i, "text": t, **({"source": f"s{i % 3}"} if i % 4 else {})} for i, t in enumerate(TEXTS)]
    jsonl = write_jsonl(src / "docs.jsonl.gz", records)
    plain = src / "notes.txt"
    plain.write_bytes(b"A plain file. Two sentences.\n")
    binary = bytes(range(256)) * 3 + b"\x00\xff" * 50
    (src / "folder" / "sub" / "blob.bin").write_bytes(binary)
    (src / "folder" / "a.txt").write_bytes("Invalid \xff UTF-8 here. Fine.".encode("latin-1"))
    expected = [(t.encode(), f"s{i % 3}" if i % 4 else "docs.jsonl.gz") for i, t in enumerate(TEXTS)]
    expected += [(plain.read_bytes(), "notes.txt"), ((src / "folder" / "a.txt").read_bytes(), "a.txt"),
                 (binary, "blob.bin")]
    return [jsonl, plain, src / "folder"], expected


def read_docs(out: Path, split: str) -> list[tuple[bytes, str]]:
    """Every document of a split, rebuilt by joining its units (offset + length) from the shards."""
    manifest = json.loads((out / "manifest.json").read_text())
    docs = []
    for shard in manifest["splits"][split]["shards"]:
        d = out / split / shard["name"]
        data = np.load(d / "bytes.npy", mmap_mode="r")
        units, doc_index = np.load(d / "units.npy"), np.load(d / "docs.npy")
        sources = json.loads((d / "sources.json").read_text())
        assert data.dtype == np.uint8 and units.dtype == doc_index.dtype == np.int64
        assert units.shape[1] == doc_index.shape[1] == 2 and len(sources) == len(doc_index)
        for (first, count), source in zip(doc_index, sources, strict=True):
            text = b"".join(bytes(data[a : a + n]) for a, n in units[first : first + count])
            assert count >= 1 and (units[first : first + count, 1] >= 1).all()
            docs.append((text, source))
    return docs


class Crash(Exception):
    pass


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def run(inputs, out, **kw) -> dict:
    return prep.prepare(inputs, out, progress=False, **{"max_unit_bytes": 32, "shard_docs": 4, **kw})


@pytest.mark.parametrize("segmenter", ["sentence", "fixed", "modality"])
def test_round_trip_jsonl_plain_files_and_folder(tmp_path, corpus, segmenter):
    inputs, expected = corpus
    out = tmp_path / "out"
    manifest = run(inputs, out, segmenter=segmenter, valid_percent=0)
    assert read_docs(out, "train") == expected and read_docs(out, "valid") == []
    train = manifest["splits"]["train"]
    assert train["docs"] == len(expected) and train["bytes"] == sum(len(t) for t, _ in expected)
    assert [s["name"] for s in train["shards"]] == [f"shard-{k:05d}" for k in range(-(-len(expected) // 4))]
    assert manifest["complete"] and manifest["settings"]["segmenter"]["kind"] == segmenter
    assert manifest["settings"]["text_field"] == "text" and manifest["skipped"] == 0
    units = np.concatenate([np.load(out / "train" / s["name"] / "units.npy")[:, 1] for s in train["shards"]])
    assert units.max() <= 32 and len(units) == train["units"]


def test_split_is_stable_and_by_key(tmp_path, corpus):
    inputs, expected = corpus
    a = run(inputs, tmp_path / "a", valid_percent=40)
    assert 0 < a["splits"]["valid"]["docs"] < len(expected)
    keys = {d.data: d.key for d in iter_records(inputs)}
    for split in ("train", "valid"):
        assert all(in_valid_split(keys[t], 40) == (split == "valid") for t, _ in read_docs(tmp_path / "a", split))
    # another shard size, and an extra input in front: every document keeps its split
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"text": f"Extra {i}."} for i in range(10)])
    run([extra, *inputs], tmp_path / "b", valid_percent=40, shard_docs=3)
    for split in ("train", "valid"):
        assert set(read_docs(tmp_path / "a", split)) <= set(read_docs(tmp_path / "b", split))
    # --valid: the held-out inputs are the valid split, everything else is train
    run(inputs[:1], tmp_path / "c", valid_inputs=inputs[1:])
    assert [t for t, _ in read_docs(tmp_path / "c", "valid")] == [t for t, _ in expected[len(TEXTS):]]
    assert len(read_docs(tmp_path / "c", "train")) == len(TEXTS)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, corpus, monkeypatch):
    inputs, _ = corpus
    run(inputs, tmp_path / "whole", valid_percent=30)
    out = tmp_path / "resumed"
    real_write, calls, crash_at = prep.write_shard, [], [3]

    def crashing(split_dir, k, *args):
        calls.append((split_dir.name, k))
        if len(calls) == crash_at[0]:
            raise Crash  # killed while writing the third shard
        real_write(split_dir, k, *args)

    monkeypatch.setattr(prep, "write_shard", crashing)
    with pytest.raises(Crash):
        run(inputs, out, valid_percent=30)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    killed = atomic_directory(out / "train" / prep.shard_name(9))  # entered, never left: a run killed mid-shard
    (killed.__enter__() / "bytes.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="did not finish"):
        PreparedUnits(out, "train")

    calls.clear()
    crash_at[0] = 0
    run(inputs, out, valid_percent=30)
    assert files_of(out) == files_of(tmp_path / "whole")
    n_shards = sum(len(list((out / s).glob("shard-*"))) for s in ("train", "valid"))
    assert len(calls) == n_shards - 2  # the two shards of the first run were not written again

    calls.clear()  # finished: a no-op
    assert run(inputs, out, valid_percent=30)["complete"] and calls == []


def test_other_settings_are_refused_unless_forced(tmp_path, corpus):
    inputs, _ = corpus
    out = tmp_path / "out"
    run(inputs, out)
    with pytest.raises(DataError, match=r"other settings \(segmenter\).*--force.*another --out"):
        run(inputs, out, segmenter="fixed")
    with pytest.raises(DataError, match="shard_docs"):
        run(inputs, out, shard_docs=5)
    (out / "train" / "keep.txt").write_text("x")
    assert run(inputs, out, segmenter="fixed", force=True)["settings"]["segmenter"]["kind"] == "fixed"
    assert not (out / "train" / "keep.txt").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="not empty"):
        run(inputs, other)
    with pytest.raises(DataError, match="max_unit_bytes and shard_docs"):
        run(inputs, tmp_path / "x", shard_docs=0)
    with pytest.raises(DataError, match="max_bytes"):
        run(inputs, tmp_path / "x", max_unit_bytes=2)
    with pytest.raises(DataError, match="no such file"):
        run([tmp_path / "missing.jsonl"], tmp_path / "x")


def test_bad_lines_unreadable_files_and_empty_documents_are_counted_and_named(tmp_path, caplog):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Good one."}\nnot json\n{"other": 1}\n{"text": ""}\n{"text": "Good two."}\n')
    cut = tmp_path / "cut.jsonl.gz"
    payload = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    cut.write_bytes(payload[: len(payload) // 2])
    (tmp_path / "empty.txt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="blcm"):
        manifest = run([bad, cut, tmp_path / "empty.txt"], tmp_path / "out", valid_percent=0)
    assert manifest["skipped"] == 3 and manifest["empty"] == 2
    line = prep.summary(tmp_path / "out", manifest)
    assert "skipped 3 bad file(s)/line(s)" in line and f"{bad}:2" in line and f"{bad}:3" in line
    assert f"{cut}: unreadable" in line and "2 empty document(s)" in line
    assert "empty document" in caplog.text
    assert read_docs(tmp_path / "out", "train")[:2] == [(b"Good one.", "bad.jsonl"), (b"Good two.", "bad.jsonl")]
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text('{"text": ""}\nnope\n')
    with pytest.raises(DataError, match=r"no documents found.*nothing.jsonl:2"):
        run([nothing], tmp_path / "none")


def test_windows_and_end_of_document_units(tmp_path, corpus):
    inputs, expected = corpus
    out = tmp_path / "out"
    run(inputs, out, segmenter="fixed", max_unit_bytes=8, valid_percent=0)
    for max_units in (1, 3, 16):
        ds = PreparedUnits(out, "train", max_units=max_units)
        by_doc: dict[int, list] = {}
        for i in range(len(ds)):
            window = ds[i]
            assert 1 <= len(window) <= max_units and all(u.dtype == np.int64 for u in window)
            by_doc.setdefault(int(ds.win_doc[i]), []).append(window)
            assert ds.source(i) == expected[int(ds.win_doc[i])][1]
        assert sorted(by_doc) == list(range(len(expected)))
        for d, windows in by_doc.items():
            # consecutive windows share one unit: the next window's first is the previous one's last
            for prev, nxt in zip(windows[:-1], windows[1:], strict=True):
                assert max_units == 1 or np.array_equal(prev[-1], nxt[0])
            units = windows[0] + [u for w in windows[1:] for u in (w if max_units == 1 else w[1:])]
            n = -(-len(expected[d][0]) // 8)
            stride = max(max_units - 1, 1)
            assert len(units) == n + 1 and len(windows) == 1 + -(-max(n + 1 - max_units, 0) // stride)
            assert units[-1].tolist() == [EOD] and all(EOD not in u for u in units[:-1])
            assert all(len(w) == max_units for w in windows[:-1])
            assert max_units == 1 or len(windows[-1]) >= 2  # every window has a (context, next) pair
            assert (np.concatenate(units[:-1]) - OFFSET).astype(np.uint8).tobytes() == expected[d][0]
        costs = ds.costs()
        assert len(costs) == len(ds)
        for i in range(len(ds)):  # the overlap unit counts towards a window's longest unit
            assert ds.win_max_bytes[i] == max(len(u) for u in ds[i])
    with pytest.raises(IndexError):
        ds[len(ds)]
    run(inputs, tmp_path / "sentences", segmenter="sentence", max_unit_bytes=16, valid_percent=0)
    for max_units in (2, 3, 5):  # units of many lengths: each window's longest unit, overlap included
        ds = PreparedUnits(tmp_path / "sentences", "train", max_units=max_units)
        assert all(ds.win_max_bytes[i] == max(len(u) for u in ds[i]) for i in range(len(ds)))


def test_collate_shapes_and_masks():
    windows = [[np.array([5, 6, 7]), np.array([8]), np.array([EOD])], [np.array([9, 10, 11, 12, 13])],
               [np.array([14, 15]), np.array([EOD])]]
    batch = collate_units(windows)
    assert batch.units.shape == (6, 5) and batch.units.dtype == torch.long
    assert batch.unit_lengths.tolist() == [3, 1, 1, 5, 2, 1]
    assert batch.doc_units.tolist() == [[0, 1, 2], [3, -1, -1], [4, 5, -1]]
    assert batch.doc_mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    flat = [u for w in windows for u in w]
    for row, u in enumerate(flat):
        assert batch.units[row, : len(u)].tolist() == u.tolist()
        assert (batch.units[row, len(u) :] == PAD).all()
    assert batch.padding_waste() == pytest.approx(1 - 13 / 30)


def test_bucket_sampler_covers_every_window_once_across_ranks_and_cuts_padding():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 200, size=960)
    seen, lens = [], set()
    for rank in range(3):
        s = BucketBatchSampler(lengths, batch_size=8, seed=5, bucket_factor=4, rank=rank, world_size=3)
        s.set_epoch(2)
        batches = list(s)
        assert len(batches) == len(s) == 40 and all(len(b) == 8 for b in batches)
        seen += [i for b in batches for i in b]
        lens.add(len(batches))
        s2 = BucketBatchSampler(lengths, batch_size=8, seed=5, bucket_factor=4, rank=rank, world_size=3)
        s2.set_epoch(2)
        assert list(s2) == batches  # deterministic per epoch
        s2.set_epoch(3)
        assert list(s2) != batches
    assert sorted(seen) == list(range(960))

    # uneven: every rank the same number of batches, every window at least once (or dropped with drop_last)
    for drop_last in (False, True):
        per_rank = [list(BucketBatchSampler(lengths[:101], 8, seed=0, rank=r, world_size=2, drop_last=drop_last))
                    for r in range(2)]
        assert len(per_rank[0]) == len(per_rank[1]) == len(BucketBatchSampler(lengths[:101], 8, drop_last=drop_last,
                                                                              world_size=2))
        got = {i for batches in per_rank for b in batches for i in b}
        assert got == set(range(101)) if not drop_last else len(got) == 96

    def waste(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches) / sum(
            len(b) * lengths[b].max() for b in batches)

    random = [rng.permutation(960)[i : i + 8] for i in range(0, 960, 8)]
    bucketed = [np.array(b) for b in BucketBatchSampler(lengths, 8, seed=0)]
    assert waste(bucketed) < waste(random) / 3


def test_bucketing_reduces_padding_on_real_text(tmp_path):
    path = shared_file("en", "valid.jsonl.gz")
    out = tmp_path / "en"
    manifest = prep.prepare([path], out, valid_percent=0, progress=False)
    with gzip.open(path, "rt") as f:
        expected = [json.loads(line)["text"].encode() for line in f]
    assert [t for t, _ in read_docs(out, "train")] == expected and manifest["splits"]["train"]["docs"] == 434
    ds = PreparedUnits(out, "train", max_units=16)

    def waste(batches):
        return np.mean([collate_units([ds[i] for i in b]).padding_waste() for b in batches])

    random = [list(range(len(ds)))[i : i + 8] for i in np.random.default_rng(0).permutation(len(ds))[::8]]
    bucketed = list(BucketBatchSampler(ds.costs(), 8, seed=0))
    assert waste(bucketed) < waste(random) - 0.03


def test_datamodule_batches_ranks_and_checks(tmp_path, corpus):
    inputs, _ = corpus
    out = tmp_path / "out"
    run(inputs, out, valid_percent=40)
    dm = UnitDataModule(str(out), max_units=4, batch_size=3, val_windows=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, UnitBatch)
    assert batch.doc_units.shape[0] <= 3 and batch.unit_modalities.shape == batch.unit_lengths.shape
    val = [b for b in dm.val_dataloader()]
    assert sum(b.doc_units.shape[0] for b in val) == 5
    assert [b.units.tolist() for b in dm.val_dataloader()] == [b.units.tolist() for b in val]  # fixed

    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, _accelerator_connector=SimpleNamespace(
        use_distributed_sampler=True))
    with pytest.raises(DataError, match="use_distributed_sampler"):
        dm.train_dataloader()
    dm.trainer._accelerator_connector.use_distributed_sampler = False
    loader = dm.train_dataloader()
    assert (loader.batch_sampler.rank, loader.batch_sampler.world_size) == (1, 2)
    _set_sampler_epoch(loader, 4)  # what Lightning calls at each epoch's start
    assert loader.batch_sampler.epoch == 4
    assert len(dm.val_dataloader().batch_sampler) == 1  # 3 of the 5 windows: one batch of 3

    UnitDataModule(str(tmp_path / "missing"))  # bad settings are reported by setup, not __init__
    with pytest.raises(DataError, match="no such directory"):
        UnitDataModule(str(tmp_path / "missing")).setup("fit")
    with pytest.raises(DataError, match="not a prepared dataset"):
        UnitDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(DataError, match="max_units"):
        UnitDataModule(str(out), max_units=0).setup("fit")


def test_cli_prepare(tmp_path, corpus, capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--out", "--max-unit-bytes", "--segmenter", "--valid-percent",
                                              "--shard-docs", "--text-field", "--force"))
    inputs, expected = corpus
    out = tmp_path / "out"
    args = ["prepare", *map(str, inputs), "--out", str(out), "--max-unit-bytes", "48", "--shard-docs", "5",
            "--valid-percent", "0", "--no-progress"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: train {len(expected)} docs") and "skipped 0 bad" in line
    assert read_docs(out, "train") == expected
    assert main([*args[:-3], "--segmenter", "fixed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blcm prepare: error:") and "--force" in err and "\n" not in err
    assert main(["prepare", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("megabytes", [pytest.param(2, id="2MB"), pytest.param(50, id="50MB", marks=pytest.mark.slow)])
def test_a_large_single_binary_file_is_kept_whole_next_to_an_empty_one(tmp_path, caplog, megabytes):
    src = tmp_path / "in"
    src.mkdir()
    big = np.random.default_rng(0).integers(0, 256, megabytes << 20, dtype=np.uint8).tobytes()
    (src / "big.bin").write_bytes(big)
    (src / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    manifest = prep.prepare([src], out, segmenter="modality", max_unit_bytes=128, valid_percent=0, progress=False)
    assert "skipped an empty document: empty.wav" in caplog.text  # named, not silently dropped
    assert manifest["splits"]["train"]["modalities"] == {"binary": 1}
    ((data, _),) = read_docs(out, "train")
    assert data == big  # nothing lost: every byte, in order
    assert manifest["splits"]["train"]["units"] == -(-len(big) // 128)


def test_skip_leaves_out_the_first_batches_of_the_next_pass_only():
    sampler = BucketBatchSampler(np.arange(40) % 7, batch_size=4, seed=3, bucket_factor=2, rank=1, world_size=2)
    full = list(sampler)
    sampler.skip = 3
    assert list(sampler) == full[3:] and len(sampler) == len(full)  # Lightning counts the epoch by len
    assert list(sampler) == full  # the pass after starts at the beginning again
