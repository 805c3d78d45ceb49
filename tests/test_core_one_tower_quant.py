"""One-Tower diffusion LCM and Quant-LCM (residual VQ): masks, caches, quantiser, input checks, and
learning the synthetic next-concept rule better than copying the last concept."""

import math

import pytest
import torch
from core_synthetic import SyntheticConcepts

from concept_core.interface import ConceptInputError, Sampling, left_align
from concept_core.one_tower import OneTowerLCM, OneTowerLCMConfig, one_tower_mask
from concept_core.quant import NotFittedError, QuantizedLCM, QuantizedLCMConfig, ResidualVQ, kmeans
from primitives.sampling import sample_next

DIM = 16
GREEDY = Sampling(steps=10, guidance_scale=1.0, temperature=0.0)


def one_tower(**kw) -> OneTowerLCM:
    return OneTowerLCM(OneTowerLCMConfig(model_dim=32, max_positions=64, **kw), DIM)


def quant(head: str = "d", fitted: bool = True, **kw) -> QuantizedLCM:
    model = QuantizedLCM(QuantizedLCMConfig(model_dim=32, max_positions=64, head=head, **kw), DIM)
    if fitted:
        sample, mask = SyntheticConcepts(DIM).batch(512, 8, torch.Generator().manual_seed(1))
        model.fit_quantizer(sample[mask], generator=torch.Generator().manual_seed(2))
    return model


def train(model, proc: SyntheticConcepts, steps: int, lr: float = 1e-2):
    g = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        concepts, mask = proc.batch(32, 8, g, min_length=2)  # right padding: exercises the masks
        loss = model.loss(concepts, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def evaluate(model, proc: SyntheticConcepts, sampling: Sampling) -> dict[str, float]:
    """Mean l2 to the true next concept (model and copy-last baseline) and contrastive accuracy: the share
    of the batch's other true next concepts that are farther from the prediction than its own."""
    g = torch.Generator().manual_seed(4)
    concepts, mask = proc.batch(256, 6, g, min_length=3)
    rows, last = torch.arange(256), mask.sum(1) - 1
    true, previous = concepts[rows, last], concepts[rows, last - 1]  # (B, d)
    context = mask.clone()
    context[rows, last] = False  # right-padded contexts: predict_next left-aligns them
    pred = model.predict_next(concepts, context, sampling, generator=torch.Generator().manual_seed(5))
    dist = torch.cdist(pred, true)  # (B, B)
    ca = ((dist > dist.diag()[:, None]).float().sum(1) / (len(dist) - 1)).mean()
    return {"l2": dist.diag().mean().item(), "copy_l2": (previous - true).norm(dim=-1).mean().item(),
            "ca": ca.item()}


# --- residual VQ ---------------------------------------------------------------------------------


def test_rvq_error_falls_with_every_codebook():
    g = torch.Generator().manual_seed(0)
    rvq = ResidualVQ(DIM, num_codebooks=4, codebook_size=32).fit(torch.randn(2048, DIM, generator=g), generator=g)
    held_out = torch.randn(512, DIM, generator=g)
    codes = rvq.encode(held_out)
    partial = rvq.partial_sums(codes)  # (n, K, d): reconstruction from codebooks 0..k
    errors = (partial - held_out[:, None]).pow(2).sum(-1).mean(0)  # (K,)
    assert (errors.diff() < 0).all(), errors
    assert errors[-1] < 0.7 * errors[0]
    torch.testing.assert_close(rvq.decode(codes), partial[:, -1])


def test_rvq_shapes_and_codes():
    g = torch.Generator().manual_seed(0)
    rvq = ResidualVQ(DIM, num_codebooks=3, codebook_size=8).fit(torch.randn(100, DIM, generator=g), generator=g)
    x = torch.randn(2, 5, DIM, generator=g)
    codes = rvq.encode(x)
    assert codes.shape == (2, 5, 3) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 8
    assert rvq.decode(codes).shape == (2, 5, DIM)
    assert rvq.partial_sums(codes).shape == (2, 5, 3, DIM)
    # greedy residual coding: the first code is the centroid nearest the input itself
    torch.testing.assert_close(codes[..., 0], torch.cdist(x, rvq.codebooks[0][None].expand(2, -1, -1)).argmin(-1))


def test_kmeans_with_duplicate_points():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, DIM, generator=g).repeat(20, 1)  # 60 points, 3 distinct: most clusters stay empty
    centroids = kmeans(points, 8, iters=5, generator=g)
    assert centroids.shape == (8, DIM) and torch.isfinite(centroids).all()
    # every point sits on a centroid
    assert (points[:, None] - centroids).norm(dim=-1).min(1).values.max() < 1e-5
    rvq = ResidualVQ(DIM, num_codebooks=2, codebook_size=8).fit(points, generator=g)
    torch.testing.assert_close(rvq.decode(rvq.encode(points)), points)


def test_unfitted_quantizer_raises():
    concepts = torch.randn(2, 4, DIM)
    with pytest.raises(NotFittedError, match="fit"):
        ResidualVQ(DIM).encode(concepts)
    model = quant(fitted=False)
    with pytest.raises(NotFittedError, match="fit_quantizer"):
        model.loss(concepts)
    with pytest.raises(NotFittedError):
        model.predict_next(concepts)
    with pytest.raises(ConceptInputError, match="at least"):
        model.fit_quantizer(torch.randn(10, DIM))  # fewer concepts than centroids


# --- One-Tower -----------------------------------------------------------------------------------


def test_one_tower_mask():
    clean_valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    keep = torch.tensor([[True, False, True, True], [True, True, True, False]])
    mask = one_tower_mask(clean_valid, keep)  # sequence [c_0, x̃_1, c_1, x̃_2, c_2, x̃_3, c_3, x̃_4]
    for b in range(2):
        for q in range(8):
            for k in range(8):
                q_noisy, k_noisy, q_pair, k_pair = q % 2, k % 2, q // 2, k // 2
                if k_noisy:  # a noisy key is visible to itself only
                    expected = q == k
                else:  # clean keys: real ones, before the query, unless a noisy query dropped its context
                    has_context = not q_noisy or bool(keep[b, q_pair])
                    expected = bool(clean_valid[b, k_pair]) and k_pair <= q_pair and has_context
                assert bool(mask[b, q, k]) == expected, (b, q, k)
    # spot checks: x̃_3 (position 5) sees c_0, c_1, c_2 and itself; x̃_2 of row 0 dropped its context
    assert mask[0, 5].nonzero().flatten().tolist() == [0, 2, 4, 5]
    assert mask[0, 3].nonzero().flatten().tolist() == [3]


def test_one_tower_cache_matches_full_forward():
    torch.manual_seed(0)
    model = one_tower().eval()
    g = torch.Generator().manual_seed(0)
    concepts, mask = torch.randn(3, 5, DIM, generator=g), torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False  # a shorter row, right-padded here and left-padded in the cached path
    x_t, t = torch.randn(3, 4, DIM, generator=g), torch.tensor([[99, 60, 30, 0]]).expand(3, -1)
    with torch.no_grad():
        full = model(concepts, mask, x_t, t, torch.ones(3, 4, dtype=torch.bool))  # (B, 4, d)
        for n in range(1, 5):  # the noisy query for concept n over the cached concepts 0..n-1
            state = model.start(*left_align(concepts[:, :n], mask[:, :n]))
            valid = mask[:, n]
            cached = model.denoise(state, x_t[:, n - 1], int(t[0, n - 1]))
            torch.testing.assert_close(cached[valid], full[valid, n - 1], atol=1e-5, rtol=1e-5)

        # start over the prefix then extend, concept by concept == start over everything (clean K/V of every layer)
        state = model.start(concepts[:2, :1], mask[:2, :1])
        for i in range(1, 5):
            old, state = state, model.extend(state, concepts[:2, i])
            assert all(c.k.shape[2] == i for c in old.caches)  # extending leaves the old state usable
        whole = model.start(concepts[:2], mask[:2])
        for a, b in zip(state.caches, whole.caches, strict=True):
            torch.testing.assert_close(a.k, b.k, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a.v, b.v, atol=1e-5, rtol=1e-5)
        # sampling reads the cache but never writes the noisy query into it
        model.sample(state, Sampling(steps=3, guidance_scale=2.0))
        assert all(c.k.shape[2] == 5 for c in state.caches)


def test_one_tower_learns_the_next_concept():
    torch.manual_seed(0)
    proc = SyntheticConcepts(DIM)
    model = train(one_tower(), proc, steps=150)
    result = evaluate(model, proc, GREEDY)
    assert result["l2"] < 0.5 * result["copy_l2"], result
    assert result["ca"] > 0.7, result


def test_one_tower_sampling_with_and_without_guidance():
    torch.manual_seed(0)
    model = one_tower().eval()
    concepts = torch.randn(3, 4, DIM)
    outs = [model.predict_next(concepts, sampling=Sampling(steps=5, guidance_scale=scale),
                               generator=torch.Generator().manual_seed(0)) for scale in (1.0, 3.0)]
    assert all(o.shape == (3, DIM) and torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[1])  # guidance changes the sample
    again = model.predict_next(concepts, sampling=Sampling(steps=5, guidance_scale=3.0),
                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, outs[1])  # seeded sampling is reproducible


# --- Quant-LCM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["d", "c"])
def test_quant_learns_the_next_concept(head):
    torch.manual_seed(0)
    proc = SyntheticConcepts(DIM)
    model = quant(head, num_codebooks=12, codebook_size=64)
    # the quantiser must not be the bottleneck: its error sits below the process noise (0.05 per dim)
    concepts, mask = proc.batch(256, 4, torch.Generator().manual_seed(6))
    qerr = (model.quantizer.decode(model.quantizer.encode(concepts[mask])) - concepts[mask]).norm(dim=-1).mean()
    assert qerr < 0.05 * DIM**0.5
    train(model, proc, steps=150)
    result = evaluate(model, proc, GREEDY)
    assert result["l2"] < 0.5 * result["copy_l2"], result
    assert result["ca"] > 0.7, result


@pytest.mark.parametrize("head", ["d", "c"])
def test_quant_sampling_knobs(head):
    torch.manual_seed(0)
    model = quant(head).eval()
    concepts = torch.randn(3, 4, DIM)
    for sampling in (GREEDY, Sampling(guidance_scale=1.0, temperature=1.0), Sampling(guidance_scale=3.0, top_k=5),
                     Sampling(guidance_scale=2.0, temperature=0.0)):
        out = model.predict_next(concepts, sampling=sampling, generator=torch.Generator().manual_seed(0))
        assert out.shape == (3, DIM) and torch.isfinite(out).all()
    state = model.start(concepts, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(state, Sampling(temperature=-1.0))


def test_quant_cache_matches_full_forward():
    torch.manual_seed(0)
    model = quant().eval()
    concepts, mask = torch.randn(2, 5, DIM), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        state = model.start(concepts[:, :2], mask[:, :2])
        for i in range(2, 5):
            state = model.extend(state, concepts[:, i])
        whole = model.start(concepts, mask)
    torch.testing.assert_close(state.hidden, whole.hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.sample(state, GREEDY), model.sample(whole, GREEDY))


# --- codebook draws ------------------------------------------------------------------------------


def test_quant_codebook_draw_reads_temperature_and_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).expand(4000, -1)  # (B, 5), the best index is 1
    draw = lambda t, k: sample_next(logits, t, k, torch.Generator().manual_seed(0))
    assert (draw(0.0, None) == 1).all() and (draw(1.0, 1) == 1).all()  # greedy; a top-1 draw is greedy too
    top2 = draw(1.0, 2)
    assert set(top2.tolist()) == {1, 3}  # only the two best, both drawn
    assert (top2 == 1).float().mean() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.03)  # softmax of 3 vs 2
    hot = draw(100.0, None)  # a high temperature flattens the draw towards uniform
    assert set(hot.tolist()) == set(range(5)) and (hot == 1).float().mean() < 0.25


def test_quant_d_head_samples_with_temperature_and_greedily_without():
    torch.manual_seed(0)
    model = quant("d").eval()
    concepts = torch.randn(3, 4, DIM)
    draws = [model.predict_next(concepts, sampling=Sampling(temperature=t, guidance_scale=1.0),
                                generator=torch.Generator().manual_seed(seed)) for t, seed in
             ((0.0, 0), (0.0, 1), (5.0, 0), (5.0, 1))]
    assert torch.equal(draws[0], draws[1])  # greedy ignores the generator
    assert not torch.equal(draws[2], draws[3])  # sampling does not



def test_quant_guidance_mixes_the_conditional_and_unconditional_logits(monkeypatch):
    """The first codebook's logits at guidance s are uncond + s·(cond - uncond), cond being the logits of an
    unguided draw and uncond those of the learned context-free state; so a large scale picks the codes the
    context favours over the context-free prediction."""
    import concept_core.quant as quant_module

    torch.manual_seed(0)
    model = quant("d").eval()
    torch.nn.init.normal_(model.out_weight, std=1.0)  # non-uniform logits to guide
    torch.nn.init.normal_(model.null_context, std=1.0)  # a context-free branch unlike the conditional one
    state = model.start(torch.randn(8, 4, DIM), torch.ones(8, 4, dtype=torch.bool))
    seen = []
    monkeypatch.setattr(quant_module, "sample_next", lambda logits, *a: seen.append(logits) or logits.argmax(-1))
    logits = {}
    for scale in (1.0, 8.0):
        seen.clear()
        model.sample(state, Sampling(guidance_scale=scale, temperature=0.0))
        logits[scale] = seen[0]  # (B, C) codebook 0, before any code is chosen
    cond = logits[1.0]
    with torch.no_grad():  # codebook 0 without context: the null state, no centroids chosen yet
        uncond = model._head(model.null_context.expand(8, 1, -1), torch.zeros(8, 1, DIM), slice(0, 1))[:, 0]
    assert not torch.allclose(cond, uncond, atol=1e-3)
    torch.testing.assert_close(logits[8.0], uncond + 8.0 * (cond - uncond))
    margin = lambda codes: (cond - uncond).gather(1, codes[:, None]).mean()  # how much the context favours them
    assert margin(logits[8.0].argmax(-1)) > margin(cond.argmax(-1))
