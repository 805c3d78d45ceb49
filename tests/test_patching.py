import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blt.entropy import MAX_ENTROPY
from blt.ids import OFFSET, decode, encode, pad_batch
from blt.patching import MODES, Patcher, Patches, check_threshold, patches_from_starts, space_like


def is_space_like(byte: int) -> bool:
    return byte < 128 and not chr(byte).isalnum()


def reference_starts(data: bytes, h: list[float], p: Patcher, threshold: float | None) -> list[bool]:
    """One byte at a time, the way the module docstring describes each mode."""
    f32 = np.float32
    th = f32(threshold) if threshold is not None else None
    out, last = [], 0
    for t in range(len(data)):
        if t == 0:
            s = True
        elif p.mode == "entropy":
            s = f32(h[t]) > th
        elif p.mode == "monotonic":
            s = f32(h[t]) - f32(h[t - 1]) > th
        elif p.mode == "both":
            s = bool(f32(h[t]) > th and f32(h[t]) - f32(h[t - 1]) > f32(p.relative_threshold))
        elif p.mode == "space":
            s = is_space_like(data[t - 1]) and not is_space_like(data[t])
        else:
            s = t % p.patch_size == 0
        if not s and p.max_patch_length is not None and t - last >= p.max_patch_length:
            s = True
        if s:
            last = t
        out.append(bool(s))
    return out


def split(data: bytes, starts: list[bool]) -> list[bytes]:
    cuts = [t for t, s in enumerate(starts) if s] + [len(data)]
    return [data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def check_invariants(patches: Patches, lengths: torch.Tensor, max_patch_length: int | None):
    B, L = patches.ids.shape
    assert patches.starts.shape == (B, L) and patches.starts.dtype == torch.bool
    assert torch.equal(patches.lengths.sum(1), lengths)
    assert torch.equal(patches.mask(), patches.lengths > 0)
    assert patches.lengths.shape[1] == (int(patches.counts.max()) if B else 0)
    for row in range(B):
        n, c = int(lengths[row]), int(patches.counts[row])
        pl = patches.lengths[row]
        assert (pl[:c] > 0).all(), "empty patch among the real ones"
        assert (pl[c:] == 0).all()
        assert c == int(patches.starts[row].sum())
        assert not patches.starts[row, n:].any()
        if n:
            assert patches.starts[row, 0], "byte 0 must start a patch"
            assert c >= 1
        else:
            assert c == 0
        if max_patch_length is not None:
            assert (pl <= max_patch_length).all()
        expected_ids = torch.repeat_interleave(torch.arange(c), pl[:c])
        assert torch.equal(patches.ids[row, :n], expected_ids)
        assert (patches.ids[row, n:] == -1).all()


ENTROPY_VALUES = st.one_of(st.floats(0.0, 5.5, width=32), st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5]))


@st.composite
def patch_inputs(draw):
    texts = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
    width = max(len(t) for t in texts) + draw(st.integers(0, 3))
    ids, lengths = pad_batch(texts, pad_to=width)
    h = draw(st.lists(st.lists(ENTROPY_VALUES, min_size=width, max_size=width), min_size=len(texts),
                      max_size=len(texts)))
    entropies = torch.tensor(h, dtype=torch.float32).reshape(len(texts), width)
    entropies = entropies.masked_fill(torch.arange(width) >= lengths[:, None], 0.0)  # as EntropyModel gives
    mode = draw(st.sampled_from(MODES))
    max_len = draw(st.one_of(st.none(), st.integers(1, 8)))
    if mode == "monotonic":
        threshold = draw(st.one_of(st.floats(-MAX_ENTROPY + 0.01, MAX_ENTROPY - 0.01), st.sampled_from([0.0, 0.5])))
    else:
        threshold = draw(st.one_of(st.floats(-0.5, MAX_ENTROPY - 0.01), st.sampled_from([0.0, 1.0, 2.0])))
    patcher = Patcher(mode=mode, threshold=threshold if mode in ("entropy", "monotonic", "both") else None,
                      relative_threshold=draw(st.sampled_from([0.0, 0.3, -0.5])),
                      patch_size=draw(st.integers(1, 6)), max_patch_length=max_len)
    return texts, ids, lengths, entropies, patcher


@settings(max_examples=300, deadline=None)
@given(patch_inputs())
def test_patches_match_reference(inputs):
    texts, ids, lengths, entropies, patcher = inputs
    patches = patcher(ids, lengths, entropies if patcher.needs_entropies else None)
    check_invariants(patches, lengths, patcher.max_patch_length)
    for row, text in enumerate(texts):
        ref = reference_starts(text, entropies[row].tolist(), patcher, patcher.threshold)
        assert patches.starts[row, : len(text)].tolist() == ref
        pieces = split(text, ref)
        c = int(patches.counts[row])
        assert c == len(pieces)
        assert patches.lengths[row, :c].tolist() == [len(p) for p in pieces]
        assert b"".join(pieces) == text


@settings(max_examples=50, deadline=None)
@given(patch_inputs(), st.floats(-1.0, 3.0))
def test_threshold_argument_overrides(inputs, threshold):
    texts, ids, lengths, entropies, patcher = inputs
    if not patcher.needs_entropies:
        return
    patches = patcher(ids, lengths, entropies, threshold=threshold)
    for row, text in enumerate(texts):
        assert patches.starts[row, : len(text)].tolist() == reference_starts(text, entropies[row].tolist(),
                                                                             patcher, threshold)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
def test_rows_patched_independently(texts):
    """A row's patches do not depend on the rows it is batched with (space mode: no entropies)."""
    patcher = Patcher(mode="space", max_patch_length=5)
    batched = patcher(*pad_batch(texts))
    for row, text in enumerate(texts):
        alone = patcher(*pad_batch([text]))
        c = int(alone.counts[0])
        assert int(batched.counts[row]) == c
        assert torch.equal(batched.lengths[row, :c], alone.lengths[0, :c])


def patch_bytes(text: bytes, patches: Patches, row: int = 0) -> list[bytes]:
    out, pos = [], 0
    for n in patches.lengths[row, : int(patches.counts[row])].tolist():
        out.append(text[pos : pos + n])
        pos += n
    return out


@pytest.mark.parametrize("mode, threshold, entropies, pieces", [
    # entropy: a patch starts where H_t > θ (2.0 is not > 2.0)
    ("entropy", 2.0, [3.0, 0.1, 2.5, 0.2, 0.1, 2.1, 2.0, 0.0], [b"ab", b"cde", b"fgh"]),
    # monotonic: where H_t - H_{t-1} > θ; the rises are -, 0.5, 2.0, -0.1, -0.1, 0.7, -3.5, 0.4
    ("monotonic", 0.45, [0.5, 1.0, 3.0, 2.9, 2.8, 3.5, 0.0, 0.4], [b"a", b"b", b"cde", b"fgh"]),
])
def test_a_global_threshold_cuts_where_its_mode_says(mode, threshold, entropies, pieces):
    text = b"abcdefgh"
    ids, lengths = pad_batch([text])
    patches = Patcher(mode, threshold=threshold)(ids, lengths, torch.tensor([entropies]))
    assert patch_bytes(text, patches) == pieces
    starts = [False] * len(text)
    for position in itertools.accumulate([0, *map(len, pieces[:-1])]):
        starts[position] = True
    assert patches.starts[0].tolist() == starts


def test_both_is_and_of_global_and_monotonic():
    text = b"abcdefgh"
    ids, lengths = pad_batch([text])
    h = torch.tensor([[0.5, 1.0, 3.0, 2.9, 3.3, 3.5, 0.0, 2.4]])
    th, rel = 2.0, 0.3
    glob = Patcher("entropy", threshold=th).starts(ids, h)
    mono = Patcher("monotonic", threshold=rel).starts(ids, h)
    both = Patcher("both", threshold=th, relative_threshold=rel)(ids, lengths, h)
    expected = (glob & mono)
    expected[:, 0] = True
    assert torch.equal(both.starts, expected)
    # a rise that ends high: c (1.0 -> 3.0), e (2.9 -> 3.3), h (0.0 -> 2.4); not f (+0.2), not b (ends low)
    assert both.starts[0].tolist() == [True, False, True, False, True, False, False, True]


def test_space_mode_words_keep_trailing_spaces_and_punctuation():
    text = b"hello world, foo"
    patches = Patcher("space")(*pad_batch([text]))
    assert patch_bytes(text, patches) == [b"hello ", b"world, ", b"foo"]


def test_space_mode_edge_cases():
    text = b"  leading\n\ttabs  caf\xc3\xa9 x1-y2"
    patches = Patcher("space")(*pad_batch([text]))
    # non-ASCII bytes are not space-like (they belong to the word); digits are not either
    assert patch_bytes(text, patches) == [b"  ", b"leading\n\t", b"tabs  ", b"caf\xc3\xa9 ", b"x1-", b"y2"]


def test_space_like():
    ids = encode(bytes(range(256)))[None]
    got = space_like(ids)[0].tolist()
    assert got == [is_space_like(b) for b in range(256)]
    assert not space_like(torch.tensor([[0, 1, 2, 3]])).any()  # specials are not bytes
    assert OFFSET == 4


def test_static_patch_size_3():
    text = b"abcdefghij"
    patches = Patcher("static", patch_size=3)(*pad_batch([text, b"abcd"]))
    assert patch_bytes(text, patches, 0) == [b"abc", b"def", b"ghi", b"j"]
    assert patches.lengths.tolist() == [[3, 3, 3, 1], [3, 1, 0, 0]]
    assert patches.counts.tolist() == [4, 2]
    assert patches.ids.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3], [0, 0, 0, 1, -1, -1, -1, -1, -1, -1]]


def test_max_patch_length_splits_long_patches():
    text = b"abcdefghijk"
    ids, lengths = pad_batch([text])
    h = torch.zeros(1, 11)
    h[0, 7] = 5.0
    patches = Patcher("entropy", threshold=1.0, max_patch_length=3)(ids, lengths, h)
    assert patch_bytes(text, patches) == [b"abc", b"def", b"g", b"hij", b"k"]


def test_empty_rows():
    ids, lengths = pad_batch([b"", b"abc"])
    patches = Patcher("space")(ids, lengths)
    assert patches.counts.tolist() == [0, 1]
    assert patches.lengths.tolist() == [[0], [3]]
    assert patches.ids[0].tolist() == [-1, -1, -1]
    ids, lengths = pad_batch([b""])
    patches = Patcher("entropy", threshold=1.0)(ids, lengths, torch.zeros(1, 0))
    assert patches.counts.tolist() == [0] and patches.lengths.shape == (1, 0)


def test_patches_from_starts_ignores_starts_past_length():
    starts = torch.tensor([[True, False, True, True, True]])
    p = patches_from_starts(starts, torch.tensor([3]))
    assert p.lengths.tolist() == [[2, 1]]
    assert p.ids.tolist() == [[0, 0, 1, -1, -1]]
    assert p.starts.tolist() == [[True, False, True, False, False]]


def test_entropy_modes_need_entropies_and_threshold():
    ids, lengths = pad_batch([b"abc"])
    for mode in ("entropy", "monotonic", "both"):
        with pytest.raises(ValueError):
            Patcher(mode, threshold=1.0)(ids, lengths)
        with pytest.raises(ValueError):
            Patcher(mode)(ids, lengths, torch.zeros(1, 3))
        assert Patcher(mode).needs_entropies
    assert not Patcher("space").needs_entropies and not Patcher("static").needs_entropies


def test_invalid_configs():
    with pytest.raises(ValueError):
        Patcher("bpe")
    with pytest.raises(ValueError):
        Patcher("static", patch_size=0)
    with pytest.raises(ValueError):
        Patcher("space", max_patch_length=0)
    with pytest.raises(ValueError):
        Patcher("entropy", threshold=float("nan"))
    with pytest.raises(ValueError):
        Patcher("monotonic", threshold=10.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), MAX_ENTROPY, MAX_ENTROPY + 1, 100, "1.0",
                                 None])
@pytest.mark.parametrize("mode", ["entropy", "monotonic", "both"])
def test_check_threshold_rejects(bad, mode):
    with pytest.raises(ValueError):
        check_threshold(bad, mode)


def test_check_threshold_accepts_and_monotonic_lower_limit():
    for mode in ("entropy", "monotonic", "both"):
        for ok in (0.0, 1, 2.5, MAX_ENTROPY - 1e-3, np.float64(1.5)):
            check_threshold(ok, mode)
    check_threshold(-1.0, "monotonic")
    with pytest.raises(ValueError):
        check_threshold(-MAX_ENTROPY, "monotonic")
    assert abs(MAX_ENTROPY - math.log(260)) < 1e-12


def random_sample(seed=0, rows=8, length=500):
    gen = torch.Generator().manual_seed(seed)
    texts = [bytes(torch.randint(0, 256, (length - 7 * r,), generator=gen).tolist()) for r in range(rows)]
    ids, lengths = pad_batch(texts)
    h = torch.rand(ids.shape, generator=gen) * MAX_ENTROPY
    h = h.masked_fill(torch.arange(ids.shape[1]) >= lengths[:, None], 0.0)
    return ids, lengths, h


@pytest.mark.parametrize("mode", ["entropy", "monotonic", "both"])
@pytest.mark.parametrize("target", [4.0, 6.0])
def test_calibrate_hits_target(mode, target):
    ids, lengths, h = random_sample()
    patcher = Patcher(mode, relative_threshold=0.0 if mode == "both" else 0.0)
    th = patcher.calibrate(ids, lengths, h, target)
    check_threshold(th, mode)
    patches = patcher(ids, lengths, h, threshold=th)
    mean = float(lengths.sum()) / float(patches.counts.sum())
    assert abs(mean - target) / target < 0.05, (th, mean)
    # and a Patcher built with that threshold gives the same thing
    same = Patcher(mode, threshold=th)(ids, lengths, h)
    assert torch.equal(same.counts, patches.counts)


def test_calibrate_is_monotone_in_target():
    ids, lengths, h = random_sample(seed=1)
    p = Patcher("entropy")
    ths = [p.calibrate(ids, lengths, h, t) for t in (2.0, 3.0, 5.0, 8.0)]
    assert ths == sorted(ths)


@pytest.mark.parametrize("mode", ["entropy", "monotonic"])
def test_calibrate_unreachable_raises(mode):
    ids, lengths, h = random_sample(rows=2, length=50)
    p = Patcher(mode)
    with pytest.raises(ValueError, match="out of reach"):
        p.calibrate(ids, lengths, h, 0.5)  # below one byte per patch
    with pytest.raises(ValueError, match="out of reach"):
        p.calibrate(ids, lengths, h, 1000.0)  # longer than the rows
    # clamp gives the threshold of the nearest reachable size instead
    lo = p.calibrate(ids, lengths, h, 0.5, clamp=True)
    hi = p.calibrate(ids, lengths, h, 1000.0, clamp=True)
    check_threshold(lo, mode)
    check_threshold(hi, mode)
    assert int(p(ids, lengths, h, lo).counts.sum()) == int(lengths.sum())  # every byte a patch
    assert p(ids, lengths, h, hi).counts.tolist() == [1, 1]  # only forced starts


def test_calibrate_rejects_bad_inputs():
    ids, lengths, h = random_sample(rows=1, length=20)
    with pytest.raises(ValueError):
        Patcher("space").calibrate(ids, lengths, h, 4.0)
    with pytest.raises(ValueError):
        Patcher("entropy").calibrate(ids[:, :0], torch.zeros(1, dtype=torch.long), h[:, :0], 4.0)


def test_decode_of_patches_round_trips():
    text = b"Patches cover every byte exactly once."
    ids, lengths = pad_batch([text])
    patches = Patcher("static", patch_size=5)(ids, lengths)
    pieces = [decode(ids[0][patches.ids[0] == i]) for i in range(int(patches.counts[0]))]
    assert b"".join(pieces) == text
