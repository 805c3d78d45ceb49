"""The one fingerprint of input files (blcm.data.fingerprint), and the two things kept under it: a prepared
directory's settings and the byte-stream cache."""

import hashlib
import json
import os

import pytest

from blcm import DataError
from blcm.data.fingerprint import fingerprint, input_files
from blcm.data.prepare import prepare
from blcm.data.streams import cached_stream
from blt.ids import OFFSET


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first document")
    b.write_text("second document")
    return a, b


def test_the_same_files_give_the_same_fingerprint_however_they_are_named(files, monkeypatch):
    a, b = files
    monkeypatch.chdir(a.parent)
    assert fingerprint([a, b]) == fingerprint([str(a), str(b)]) == fingerprint(["a.txt", "./b.txt"])


def test_a_changed_size_or_modification_time_changes_it(files):
    a, b = files
    before = fingerprint([a, b])
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched, same bytes
    touched = fingerprint([a, b])
    assert touched != before
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint([a, b]) == before
    a.write_text("first document, longer")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # another size at the same time
    assert fingerprint([a, b]) not in (before, touched)


def test_the_order_of_inputs_counts(files):
    a, b = files  # documents are read in the order given: another order is other data
    assert fingerprint([a, b]) != fingerprint([b, a])


def test_a_directory_stands_for_its_files_sorted_by_path(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("z.txt", "sub/m.txt", "a.txt"):
        (tmp_path / "d" / name).write_text(name)
    d = tmp_path / "d"
    assert input_files([d]) == [d / "a.txt", d / "sub" / "m.txt", d / "z.txt"]
    assert fingerprint([d]) == fingerprint([d / "a.txt", d / "sub" / "m.txt", d / "z.txt"])
    before = fingerprint([d])
    (d / "new.txt").write_text("one more")
    assert fingerprint([d]) != before


def test_the_digest_is_the_one_prepared_manifests_hold(files):
    """A prepared directory's manifest keeps this digest: if it changed, every directory prepared before would
    be refused as prepared from other inputs."""
    a, b = files
    rows = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in (a, b)]
    assert fingerprint([a, b]) == hashlib.sha1(json.dumps(rows).encode()).hexdigest()


def test_prepare_refuses_changed_inputs_and_the_stream_cache_reads_them_again(tmp_path, files):
    a, b = files
    out = tmp_path / "prepared"
    manifest = prepare([a, b], out, valid_percent=0, progress=False)
    assert manifest["settings"]["fingerprint"] == fingerprint([a, b])
    assert cached_stream([str(a)]).tolist()[1:-1] == [x + OFFSET for x in b"first document"]

    a.write_text("first document, edited")
    with pytest.raises(DataError, match="input files"):
        prepare([a, b], out, valid_percent=0, progress=False)
    assert cached_stream([str(a)]).tolist()[1:-1] == [x + OFFSET for x in b"first document, edited"]
