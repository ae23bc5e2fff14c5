"""Hungarian matching of proposals to lesions: optimal, one-to-one, 0 lesions, more lesions than tokens."""

import itertools

import pytest
import torch

from malenia.model.matcher import HungarianMatcher, bce_cost, dice_cost, hungarian, proposals_on_image_grid


def brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost over all one-to-one assignments of min(N, K) pairs."""
    n, k = cost.shape
    if n == 0 or k == 0:
        return 0.0
    if k <= n:
        return min(sum(cost[t, j].item() for j, t in enumerate(toks)) for toks in itertools.permutations(range(n), k))
    return min(sum(cost[i, l].item() for i, l in enumerate(les)) for les in itertools.permutations(range(k), n))


def random_case(n, k, voxels=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, voxels, generator=g) * 3
    gt = (torch.rand(k, voxels, generator=g) < 0.3).float()
    return logits, gt


@pytest.mark.parametrize("n, k", [(4, 1), (4, 3), (5, 5), (3, 5), (2, 6), (6, 0)])
@pytest.mark.parametrize("seed", range(5))
def test_assignment_is_optimal_and_one_to_one(n, k, seed):
    logits, gt = random_case(n, k, seed=seed)
    matcher = HungarianMatcher(cost_bce=1.0, cost_dice=1.0)
    cost = matcher.cost(logits, gt)
    tok, les = matcher.match(logits, gt)
    assert len(tok) == len(les) == min(n, k)
    assert len(set(tok.tolist())) == len(tok) and len(set(les.tolist())) == len(les)
    assert cost[tok, les].sum().item() == pytest.approx(brute_force(cost), abs=1e-5)


def test_costs_prefer_the_overlapping_proposal():
    gt = torch.zeros(2, 100)
    gt[0, :20] = 1
    gt[1, 50:60] = 1
    logits = torch.full((3, 100), -8.0)
    logits[0, 50:60] = 8  # token 0 covers lesion 1
    logits[2, :20] = 8  # token 2 covers lesion 0
    for cost in (dice_cost(logits, gt), bce_cost(logits, gt)):
        assert cost[2, 0] < cost[0, 0] and cost[2, 0] < cost[1, 0]
        assert cost[0, 1] < cost[1, 1] and cost[0, 1] < cost[2, 1]
    tok, les = HungarianMatcher().match(logits, gt)
    assert dict(zip(les.tolist(), tok.tolist())) == {0: 2, 1: 0}


def test_bce_cost_is_the_mean_binary_cross_entropy_of_every_pair():
    """The one-softplus form equals torch's BCE with logits for every (proposal, lesion) pair, batched too."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 300, generator=g) * 6
    gt = (torch.rand(2, 3, 300, generator=g) < 0.2).float()
    expected = torch.stack([torch.stack([torch.stack([
        F.binary_cross_entropy_with_logits(logits[b, n], gt[b, k]) for k in range(3)]) for n in range(5)])
        for b in range(2)])
    torch.testing.assert_close(bce_cost(logits, gt), expected, rtol=1e-5, atol=1e-5)


def test_empty_cost_matrix():
    tok, les = hungarian(torch.zeros(16, 0))
    assert tok.numel() == les.numel() == 0 and tok.dtype == torch.int64


def test_point_sampling_equals_dense_upsampling():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 3, 4, generator=g)  # a 1/16 grid of a (32, 48, 64) padded volume
    image_shape = (30, 41, 64)
    dense = proposals_on_image_grid(logits, (32, 48, 64), image_shape, None)
    index = torch.randperm(30 * 41 * 64, generator=g)[:500]
    sampled = proposals_on_image_grid(logits, (32, 48, 64), image_shape, index)
    torch.testing.assert_close(sampled, dense[..., index], atol=1e-5, rtol=1e-5)


def test_coarse_masks_keep_every_lesion_voxel_as_a_share_of_its_cell():
    from malenia.model.matcher import coarse_masks

    image_shape = (5, 6, 7)  # odd sizes: the last cells are partly outside the image
    masks = torch.zeros(1, 2, *image_shape)
    masks[0, 0, 4, 5, 6] = 1  # one voxel in the corner cell
    masks[0, 1, 0:2, 2:4, 2:6] = 1  # two whole cells
    coarse = coarse_masks(masks.flatten(2), image_shape, 2)
    assert coarse.shape == (1, 2, 3 * 3 * 4)
    assert coarse[0, 0].max() == 0.125 and coarse[0, 0].sum() * 8 == 1
    assert sorted(coarse[0, 1][coarse[0, 1] > 0].tolist()) == [1.0, 1.0] and coarse[0, 1].sum() * 8 == 16


def _separated_case(image_shape=(16, 16, 16)):
    """Two lesions and four smooth proposals on a 1/4 grid: tokens 1 and 3 each cover one lesion."""
    from malenia.model.targets import LesionTargets

    masks = torch.zeros(2, *image_shape, dtype=torch.bool)
    masks[0, 1:7, 1:7, 1:7] = True
    masks[1, 9:15, 9:15, 8:14] = True
    logits = torch.full((1, 4, 4, 4, 4), -6.0)
    logits[0, 1, :2, :2, :2] = 6.0
    logits[0, 3, 2:, 2:, 2:] = 6.0
    logits[0, 2] = torch.linspace(-3, 3, 64).view(4, 4, 4)  # a diffuse one
    return logits.requires_grad_(), [LesionTargets(masks, [[0], [1]])], image_shape


@pytest.mark.parametrize("stride", [2, 4])
def test_coarse_grid_matching_agrees_and_only_matched_tokens_get_gradient(stride):
    logits, targets, shape = _separated_case()
    exact = HungarianMatcher().supervise([logits], targets, shape, shape)[0]
    coarse = HungarianMatcher(stride=stride).supervise([logits], targets, shape, shape)[0]
    assert [t.tolist() for t in exact.matches[0]] == [[1, 3], [0, 1]]
    assert [t.tolist() for t in coarse.matches[0]] == [t.tolist() for t in exact.matches[0]]
    assert coarse.logits.shape == (1, 4, (16 // stride) ** 3)  # the costs' points
    pred, gt = coarse.matched()  # the losses' voxels: the image grid, as without a stride
    full = proposals_on_image_grid(logits.detach(), shape, shape, None)
    torch.testing.assert_close(pred, full[0, [1, 3]])
    assert torch.equal(gt, targets[0].masks.flatten(1).float())
    pred.sum().backward()
    touched = logits.grad.abs().flatten(2).sum(-1)[0]
    assert touched[1] > 0 and touched[3] > 0 and touched[0] == 0 and touched[2] == 0


def test_coarse_costs_are_close_to_the_image_grid_costs():
    logits, targets, shape = _separated_case()
    masks = targets[0].masks.flatten(1).float()[None]
    matcher = HungarianMatcher(stride=2)
    s, gt, coarse = matcher._block_costs(logits, masks, shape, shape, None)
    exact = HungarianMatcher().cost(proposals_on_image_grid(logits.detach(), shape, shape, None)[0], masks[0])
    # sigmoid of a cell's mean logit is not the mean sigmoid of its voxels: close, and the same order per lesion
    torch.testing.assert_close(coarse[0], exact, atol=0.06, rtol=0)
    assert torch.equal(coarse[0].argsort(0), exact.argsort(0))
