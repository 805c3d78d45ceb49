import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.hashing import HashNgramEmbedding, hash_ngrams
from blt.ids import PAD, encode

TEXT = b"The quick brown fox jumps over the lazy dog. \x00\xff\x80 0123456789"


def test_deterministic_across_processes():
    ids = encode(TEXT)[None]
    expected = {n: hash_ngrams(ids, n, 2**14).tolist() for n in (1, 3, 8)}
    code = (
        "import json, sys\n"
        "from blt.hashing import hash_ngrams\n"
        "from blt.ids import encode\n"
        f"ids = encode({TEXT!r})[None]\n"
        "print(json.dumps({n: hash_ngrams(ids, n, 2**14).tolist() for n in (1, 3, 8)}))\n"
    )
    # hash() of str/bytes differs under another PYTHONHASHSEED; hash_ngrams must not
    seed = "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "54321"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=120)
    got = {int(n): v for n, v in json.loads(out.stdout).items()}
    assert got == expected


def test_known_values_are_stable():
    """Pin the hash: a change would silently invalidate every trained hash-embedding table."""
    prime, base, salt = 2**31 - 1, 1_000_003, 0x9E3779B1
    ids = encode(b"abcd")[None]
    for n in (1, 2, 3):
        got = hash_ngrams(ids, n, 1000)[0].tolist()
        padded = [PAD] * (n - 1) + ids[0].tolist()
        want = []
        for t in range(4):
            window = padded[t : t + n]
            h = sum(x * pow(base, n - 1 - j, prime) for j, x in enumerate(window))
            want.append(((h + n * salt) % prime) % 1000)
        assert got == want


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=30), min_size=1, max_size=4), st.integers(1, 10),
       st.sampled_from([1, 7, 1000, 2**14, 2**20]))
def test_indices_in_range(seqs, n, table_size):
    width = max(len(s) for s in seqs)
    ids = torch.stack([torch.nn.functional.pad(encode(s), (0, width - len(s))) for s in seqs])
    h = hash_ngrams(ids, n, table_size)
    assert h.shape == ids.shape
    assert h.dtype == torch.int64
    if h.numel():
        assert int(h.min()) >= 0 and int(h.max()) < table_size


def test_different_n_give_different_indices():
    ids = encode(TEXT)[None]
    hashes = {n: hash_ngrams(ids, n, 2**14) for n in range(1, 9)}
    for a in range(1, 9):
        for b in range(a + 1, 9):
            same = (hashes[a] == hashes[b]).float().mean().item()
            assert same < 0.1, (a, b, same)


def test_different_ngrams_mostly_collision_free():
    torch.manual_seed(0)
    ids = torch.randint(4, 260, (1, 2000))
    h = hash_ngrams(ids, 4, 2**20)[0, 3:]  # positions with a full 4-gram
    windows = {tuple(ids[0, t - 3 : t + 1].tolist()) for t in range(3, 2000)}
    assert len(set(h.tolist())) >= 0.99 * len(windows)


def test_equal_ngrams_hash_equal():
    ids = encode(b"xyzabc__xyzabc")[None]
    h = hash_ngrams(ids, 3, 2**14)[0]
    assert h[5] == h[13]  # both end "abc"
    assert h[2] == h[10]  # both end "xyz"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_depends_only_on_last_n_ids(data):
    n = data.draw(st.integers(1, 8))
    length = data.draw(st.integers(1, 40))
    ids = torch.tensor(data.draw(st.lists(st.integers(0, 259), min_size=length, max_size=length)))[None]
    t = data.draw(st.integers(0, length - 1))
    before = hash_ngrams(ids, n, 2**14)
    changed = ids.clone()
    # anything more than n - 1 positions before t, and anything after t
    far = [i for i in range(length) if i < t - n + 1 or i > t]
    if far:
        for i in data.draw(st.lists(st.sampled_from(far), max_size=5)):
            changed[0, i] = data.draw(st.integers(0, 259))
    after = hash_ngrams(changed, n, 2**14)
    assert after[0, t] == before[0, t]


def test_depends_on_each_of_last_n_ids():
    ids = encode(b"abcdefghijkl")[None]
    n, t = 5, 9
    before = hash_ngrams(ids, n, 2**20)[0, t]
    for i in range(t - n + 1, t + 1):
        changed = ids.clone()
        changed[0, i] += 1
        assert hash_ngrams(changed, n, 2**20)[0, t] != before


def test_left_padding_is_pad():
    ids = encode(b"ab")[None]
    with_pad = torch.cat([torch.full((1, 2), PAD), ids], 1)
    torch.testing.assert_close(hash_ngrams(ids, 3, 997), hash_ngrams(with_pad, 3, 997)[:, 2:])


def test_rows_independent():
    a, b = encode(b"hello world"), encode(b"HELLO WORLD")
    batch = hash_ngrams(torch.stack([a, b]), 4, 4096)
    assert torch.equal(batch[0], hash_ngrams(a[None], 4, 4096)[0])
    assert torch.equal(batch[1], hash_ngrams(b[None], 4, 4096)[0])


def test_invalid_n():
    with pytest.raises(ValueError):
        hash_ngrams(encode(b"abc")[None], 0, 10)


def reference_hash(window: list[int], n: int, table_size: int) -> int:
    """The polynomial hash in Python's unbounded integers: what int64 must reproduce exactly."""
    value = sum(x * 1_000_003 ** (n - 1 - j) for j, x in enumerate(window)) + n * 0x9E3779B1
    return value % (2**31 - 1) % table_size


@pytest.mark.parametrize("n", [1, 3, 8])
def test_large_ids_hash_as_unbounded_integers_do(n):
    ids = torch.tensor([[259] * 16 + [4, 200, 258, 7, 259, 131]])  # the largest id, where overflow would show
    h = hash_ngrams(ids, n, 2**31 - 1)
    padded = [0] * (n - 1) + ids[0].tolist()
    assert h[0].tolist() == [reference_hash(padded[i : i + n], n, 2**31 - 1) for i in range(ids.shape[1])]


@pytest.mark.parametrize("sizes", [(3,), (3, 4, 5, 6, 7, 8)])
def test_hash_ngram_embedding(sizes):
    torch.manual_seed(0)
    emb = HashNgramEmbedding(24, sizes, table_size=512)
    assert len(emb.tables) == len(sizes)
    assert all(t.weight.shape == (512, 24) for t in emb.tables)
    ids = encode(b"some bytes here")[None].expand(3, -1)
    out = emb(ids)
    assert out.shape == (3, 15, 24)
    expected = sum(t(hash_ngrams(ids, n, 512)) for n, t in zip(sizes, emb.tables, strict=True))
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert all(t.weight.grad is not None for t in emb.tables)
