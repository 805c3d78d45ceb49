import math

import pytest
import torch

from concept_core.metrics import contrastive_accuracy, dispersion, l2, neighbour_mask, paraphrasing_ratio


def points(*xs: float) -> torch.Tensor:
    """Concepts on a line, (n, 1)."""
    return torch.tensor(xs)[:, None]


def test_l2():
    pred = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert torch.equal(l2(pred, target), torch.tensor([5.0, 0.0]))
    assert l2(torch.zeros(2, 3, 4), torch.ones(2, 3, 4)).shape == (2, 3)


def test_neighbour_mask():
    assert neighbour_mask(4).int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]
    # a document boundary between items 1 and 2 cuts the neighbourhood
    assert neighbour_mask(4, torch.tensor([0, 0, 1, 1])).int().tolist() == [
        [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_contrastive_accuracy_by_hand():
    # targets at 0, 10, 20, 30, 40, 50 on a line; prediction 0 sits at 12: its target (0) is 12 away
    target = points(0, 10, 20, 30, 40, 50)
    pred = target.clone()
    pred[0] = 12.0
    ca = contrastive_accuracy(pred, target)
    # item 0: candidates exclude 0 (self) and 10 (neighbour): 20, 30, 40, 50 are 8, 18, 28, 38 away,
    # so 3 of 4 are farther than 12. Item 10 would have beaten it, but it is a neighbour.
    assert ca[0].item() == pytest.approx(3 / 4)
    # item 3 (target 30): candidates 0, 10, 50 (20 and 40 are neighbours); all farther than 0
    assert ca[3].item() == 1.0
    assert ca.shape == (6,)


def test_contrastive_accuracy_neighbours_only_within_a_document():
    target = points(0, 10, 20, 30, 40, 50)
    pred = target.clone()
    pred[2] = 11.0  # 9 from its target (20); 10 is 1 away, 30 is 19 away
    same_doc = contrastive_accuracy(pred, target)
    split = contrastive_accuracy(pred, target, doc_ids=torch.tensor([0, 0, 1, 1, 1, 1]))
    # one document: 10 and 30 are neighbours; candidates 0, 40, 50 are all farther -> 1
    assert same_doc[2].item() == 1.0
    # item 1 (target 10) is in another document, so it becomes a candidate, and it is closer: 3 of 4
    assert split[2].item() == pytest.approx(3 / 4)


def test_contrastive_accuracy_explicit_neighbours():
    target = points(0, 10, 20, 30)
    pred = points(9, 10, 20, 30)  # item 0 predicts 9: target 10 is 1 away, its own is 9 away
    none_excluded = torch.zeros(4, 4, dtype=torch.bool)
    ca = contrastive_accuracy(pred, target, none_excluded)
    assert ca[0].item() == pytest.approx(2 / 3)  # of 10, 20, 30 only 20 and 30 are farther than 9
    default = contrastive_accuracy(pred, target)
    torch.testing.assert_close(contrastive_accuracy(pred, target, neighbour_mask(4)), default)


def test_perfect_predictions_give_ca_one():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(64, 16, generator=g)
    assert torch.equal(contrastive_accuracy(target.clone(), target), torch.ones(64))
    doc_ids = torch.arange(64) // 8
    assert torch.equal(contrastive_accuracy(target.clone(), target, doc_ids=doc_ids), torch.ones(64))


def test_random_predictions_give_ca_near_half():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    assert contrastive_accuracy(pred, target).mean().item() == pytest.approx(0.5, abs=0.05)


def test_contrastive_accuracy_without_candidates_is_nan():
    ca = contrastive_accuracy(points(0, 1, 2), points(0, 1, 2))
    assert math.isnan(ca[1].item())  # 0 and 2 are both neighbours of 1
    assert ca[0].item() == 1.0  # item 0 still has 2 as a candidate


def test_contrastive_accuracy_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        contrastive_accuracy(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="doc_ids="):
        contrastive_accuracy(x, x, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="not both"):
        contrastive_accuracy(x, x, neighbour_mask(4), doc_ids=torch.zeros(4))
    with pytest.raises(ValueError, match="doc_ids must be"):
        contrastive_accuracy(x, x, doc_ids=torch.zeros(3))


def test_paraphrasing_ratio_by_hand():
    e1, e2, e3 = torch.eye(3)
    context = torch.stack([torch.stack([e1, e2]), torch.stack([e1, e3])])  # (2, 2, 3)
    mask = torch.ones(2, 2, dtype=torch.bool)
    true = torch.stack([e1 + e3, e1 + e2])  # row 0: max cos 1/√2 (to e1); row 1: 1/√2
    pred = torch.stack([e1, e3])  # row 0 copies e1: cos 1; row 1 copies e3: cos 1
    par = paraphrasing_ratio(pred, true, context, mask)
    torch.testing.assert_close(par, torch.full((2,), math.sqrt(2)))
    # masking out row 1's e3 leaves only e1, to which the prediction e3 has cosine 0
    par = paraphrasing_ratio(pred, true, context, torch.tensor([[True, True], [True, False]]))
    assert par[1].item() == pytest.approx(0.0, abs=1e-7)


def test_paraphrasing_ratio_of_the_truth_is_one():
    g = torch.Generator().manual_seed(0)
    true, context = torch.randn(5, 8, generator=g), torch.randn(5, 7, 8, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[:, 0] = True
    par = paraphrasing_ratio(true.clone(), true, context, mask)
    assert par.shape == (5,)
    torch.testing.assert_close(par, torch.ones(5))


def test_paraphrasing_ratio_without_context_is_nan():
    par = paraphrasing_ratio(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4, 3),
                             torch.tensor([[True] * 4, [False] * 4]))
    assert par[0].item() == pytest.approx(1.0) and math.isnan(par[1].item())


def test_paraphrasing_ratio_errors():
    with pytest.raises(ValueError, match="context"):
        paraphrasing_ratio(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 4, 3), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        paraphrasing_ratio(torch.ones(2, 3), torch.ones(2, 4), torch.ones(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))


def test_dispersion_of_known_vectors():
    same = torch.ones(4, 3)
    assert dispersion(same) == pytest.approx({"mean_cosine": 1.0, "dim_variance": 0.0, "min_dim_variance": 0.0})
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert dispersion(opposite) == pytest.approx({"mean_cosine": -1.0, "dim_variance": 0.5, "min_dim_variance": 0.0})
