import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.ids import BOS, EOD, EOS, OFFSET, PAD, VOCAB_SIZE, decode, encode, pad_batch


def test_constants():
    assert (PAD, BOS, EOS, EOD) == (0, 1, 2, 3)
    assert OFFSET == 4
    assert VOCAB_SIZE == 260


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_round_trip(data):
    ids = encode(data)
    assert ids.dtype == torch.int64
    assert ids.shape == (len(data),)
    if data:
        assert int(ids.min()) >= OFFSET and int(ids.max()) < VOCAB_SIZE
    assert decode(ids) == data
    assert decode(ids.numpy()) == data
    assert decode(ids.tolist()) == data


@given(st.binary(max_size=50))
def test_encode_accepts_bytearray_and_memoryview(data):
    assert torch.equal(encode(bytearray(data)), encode(data))
    assert torch.equal(encode(memoryview(data)), encode(data))


def test_encode_offsets_each_byte():
    assert encode(b"\x00\x01\xff").tolist() == [4, 5, 259]
    assert encode(b"").shape == (0,)


def test_encode_non_utf8():
    data = bytes(range(256))
    assert decode(encode(data)) == data
    assert encode(data).tolist() == list(range(OFFSET, VOCAB_SIZE))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 255).map(lambda b: ("byte", b)),
                          st.sampled_from([PAD, BOS, EOS, EOD]).map(lambda s: ("special", s))), max_size=60))
def test_specials_dropped(items):
    ids = [x + OFFSET if kind == "byte" else x for kind, x in items]
    expected = bytes(x for kind, x in items if kind == "byte")
    assert decode(ids) == expected
    assert decode(torch.tensor(ids, dtype=torch.long)) == expected


def test_decode_2d_flattens_and_drops_padding():
    ids, _ = pad_batch([b"ab", b"c"])
    assert decode(ids) == b"abc"


@pytest.mark.parametrize("bad", [[-1], [VOCAB_SIZE], [5, 1000], [4, -7, 5]])
def test_out_of_range_raises(bad):
    with pytest.raises(ValueError):
        decode(bad)
    with pytest.raises(ValueError):
        decode(torch.tensor(bad))


def test_decode_empty():
    assert decode([]) == b""
    assert decode(torch.zeros(0, dtype=torch.long)) == b""
    assert decode(np.zeros((0,), dtype=np.int64)) == b""


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6), st.integers(0, 10))
def test_pad_batch(seqs, extra):
    ids, lengths = pad_batch(seqs)
    longest = max(len(s) for s in seqs)
    assert ids.shape == (len(seqs), longest)
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert lengths.tolist() == [len(s) for s in seqs]
    for row, s in enumerate(seqs):
        assert decode(ids[row, : len(s)]) == s
        assert (ids[row, len(s) :] == PAD).all()
        assert decode(ids[row]) == s

    padded, lengths2 = pad_batch(seqs, pad_to=longest + extra)
    assert padded.shape == (len(seqs), longest + extra)
    assert torch.equal(lengths2, lengths)
    assert torch.equal(padded[:, :longest], ids)
    assert (padded[:, longest:] == PAD).all()


def test_pad_batch_too_short_raises():
    with pytest.raises(ValueError):
        pad_batch([b"abcd", b"a"], pad_to=3)


def test_pad_batch_empty_list():
    ids, lengths = pad_batch([])
    assert ids.shape == (0, 0)
    assert lengths.shape == (0,)
    ids, _ = pad_batch([], pad_to=5)
    assert ids.shape == (0, 5)
