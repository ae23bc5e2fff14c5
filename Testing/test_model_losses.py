"""Losses: MP-NCE by hand, alignment lowers it, degenerate targets (no lesion, more lesions than tokens)."""

import math

import pytest
import torch
import torch.nn.functional as F

from malenia.model.losses import MaleniaCriterion, dice_loss, mp_nce, positive_sets
from malenia.model.network import MaleniaNet
from malenia.model.targets import LesionTargets
from model_helpers import tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mp_nce_matches_hand_computation():
    # candidates [t0, r0, r1, r2]; token 0 is a lesion with positives r0, r1; token 1 is background.
    sim = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 1.5, -0.5, 0.0]])
    pos = torch.tensor([[False, True, True, False], [True, False, False, False]])
    e = math.exp
    # token 0: each positive against the negatives {t0, r2} only, not against the other positive
    l0 = -0.5 * (math.log(e(1.0) / (e(1.0) + e(2.0) + e(-1.0))) + math.log(e(0.0) / (e(0.0) + e(2.0) + e(-1.0))))
    # token 1: t0 against every bank row
    l1 = -math.log(e(0.5) / (e(0.5) + e(1.5) + e(-0.5) + e(0.0)))
    torch.testing.assert_close(mp_nce(sim, pos), torch.tensor([l0, l1]))
    # one positive reduces to InfoNCE (cross-entropy)
    torch.testing.assert_close(mp_nce(sim[1:], pos[1:]), F.cross_entropy(sim[1:], torch.tensor([0]), reduction="none"))


def test_mp_nce_is_lower_when_positives_align():
    g = torch.Generator().manual_seed(0)
    cands = F.normalize(torch.randn(20, 32, generator=g), dim=-1)
    pos = torch.zeros(1, 20, dtype=torch.bool)
    pos[0, [3, 7, 11]] = True
    aligned = F.normalize(cands[[3, 7, 11]].mean(0), dim=0)
    opposed = -aligned
    scale = 10.0
    loss = [mp_nce(scale * (m @ cands.T)[None], pos).item() for m in (aligned, opposed)]
    assert loss[0] < loss[1]


def test_positive_sets_follow_the_matching():
    masks = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    t = LesionTargets(masks, [[0, 2], [1]], report_rows=[3, 4])
    matches = [(torch.tensor([2, 0]), torch.tensor([1, 0]))]  # token 2 -> lesion 1, token 0 -> lesion 0
    pos = positive_sets(matches, [t], num_tokens=4, num_rows=5, multi_positive=True, device="cpu")
    expected = torch.zeros(1, 4, 6, dtype=torch.bool)
    expected[0, 0, [1, 3]] = True
    expected[0, 2, 2] = True
    expected[0, [1, 3], 0] = True
    assert torch.equal(pos, expected)
    single = positive_sets(matches, [t], num_tokens=4, num_rows=5, multi_positive=False, device="cpu")
    assert single[0, 0].nonzero().flatten().tolist() == [4] and single[0, 2].nonzero().flatten().tolist() == [5]


def test_dice_loss():
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert dice_loss(torch.tensor([[20.0, 20.0, -20.0, -20.0]]), gt).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(torch.tensor([[-20.0, -20.0, 20.0, 20.0]]), gt).item() == pytest.approx(1 - 1 / 5, abs=1e-6)


def tiny(**changes):
    return tiny_config(stages=5, **{"num_tokens": 3, **changes})


def test_criterion_with_no_lesions_and_with_more_lesions_than_tokens():
    torch.manual_seed(0)
    cfg = tiny()
    net = MaleniaNet(cfg)
    bank, aspects = torch.randn(16, 8), torch.arange(16) % 8
    masks = torch.zeros(5, 32, 32, 32, dtype=torch.bool)
    for k in range(5):
        masks[k, 6 * k : 6 * k + 4, 4:10, 4:10] = True
    targets = [
        LesionTargets(torch.zeros(0, 32, 32, 32, dtype=torch.bool), []),
        LesionTargets(masks, [[k, k + 8] for k in range(5)]),
    ]
    out = net(torch.rand(2, 1, 32, 32, 32), bank, aspects, targets)
    assert all(len(s.matches[0][0]) == 0 for s in out.supervision)
    assert all(len(s.matches[1][0]) == cfg.num_tokens for s in out.supervision)  # 3 of the 5 lesions matched
    losses = MaleniaCriterion(cfg)(out, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    # only background tokens in the whole batch: the losses stay finite and still train the model
    out = net(torch.rand(1, 1, 32, 32, 32), bank, aspects, targets[:1])
    losses = MaleniaCriterion(cfg)(out, targets[:1])
    assert losses["deep"].item() == 0.0 and losses["seg_dice"].item() == 0.0
    assert losses["sim"] > 0 and losses["seg_bce"] > 0
    net.zero_grad()
    losses["total"].backward()
    assert net.text.t0.grad.abs().sum() > 0


def one_cube_forward(cfg):
    """A tiny net's training forward on a random 32³ image with one cubic lesion described by 8 rows."""
    net = MaleniaNet(cfg)
    masks = torch.zeros(1, 32, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 8:16, 8:16] = True
    targets = [LesionTargets(masks, [list(range(8))])]
    return net, net(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8, targets), targets


def test_total_is_the_weighted_sum():
    torch.manual_seed(0)
    cfg = tiny(lambda_deep=0.5, lambda_sim=2.0, lambda_seg=3.0, alpha_bce=1.5, alpha_dice=0.25)
    net, out, targets = one_cube_forward(cfg)
    l = MaleniaCriterion(cfg)(out, targets)
    torch.testing.assert_close(l["seg"], 1.5 * l["seg_bce"] + 0.25 * l["seg_dice"])
    torch.testing.assert_close(l["total"], 0.5 * l["deep"] + 2.0 * l["sim"] + 3.0 * l["seg"])


def test_foreground_loss_matches_a_hand_computed_value():
    from malenia.model.losses import foreground_loss, foreground_map

    logits = torch.tensor([[[[[0.0, 2.0]]], [[[-2.0, 0.0]]]]])  # [B=1, N=2, 1, 1, 2]
    score = torch.tensor([[0.5, 1.0]])
    prob = foreground_map(logits, score)
    s = torch.sigmoid(torch.tensor([0.0, 2.0, -2.0]))
    expected_p = torch.stack([torch.maximum(0.5 * s[0], 1.0 * s[2]), torch.maximum(0.5 * s[1], torch.tensor(0.5))])
    torch.testing.assert_close(prob.flatten(), expected_p)
    masks = torch.tensor([[[[True, False]]]])  # one lesion at the first voxel
    loss = foreground_loss(prob, [LesionTargets(masks, [[0]])])
    gt = torch.tensor([1.0, 0.0])
    bce = -(gt * expected_p.log() + (1 - gt) * (1 - expected_p).log()).mean()
    dice = 1 - (2 * (expected_p * gt).sum() + 1) / (expected_p.sum() + gt.sum() + 1)
    torch.testing.assert_close(loss, bce + dice)


def test_foreground_term_is_weighted_in_and_trains_the_no_lesion_score():
    torch.manual_seed(0)
    cfg = tiny(lambda_fg=0.7)
    net, out, targets = one_cube_forward(cfg)
    l = MaleniaCriterion(cfg)(out, targets)
    assert l["fg"] > 0
    torch.testing.assert_close(l["total"], l["deep"] + l["sim"] + l["seg"] + 0.7 * l["fg"])
    net.zero_grad()
    (l["fg"]).backward()
    assert net.text.t0.grad.abs().sum() > 0  # the score's gradient reaches the "no lesion" embedding
    off = MaleniaCriterion(tiny())(out, targets)
    assert off["fg"].item() == 0.0


def test_background_tokens_weigh_less_in_the_similarity_loss():
    from malenia.model.losses import mp_nce, positive_sets

    torch.manual_seed(0)
    net, out, targets = one_cube_forward(tiny(multi_scale_alignment=False, background_token_weight=0.25))
    sim = out.sim_logits[-1]
    pos = positive_sets(out.supervision[-1].matches, targets, sim.shape[1], sim.shape[2] - 1, True, sim.device)[0]
    per_token = mp_nce(sim[0], pos)
    w = torch.where(pos[:, 0], 0.25, 1.0)
    expected = (per_token * w).sum() / w.sum()
    torch.testing.assert_close(MaleniaCriterion(net.cfg)(out, targets)["sim"], expected)
    plain = MaleniaCriterion(net.cfg.replace(background_token_weight=1.0))(out, targets)["sim"]
    torch.testing.assert_close(plain, per_token.mean())


def test_training_steps_and_inference_run_under_bfloat16_autocast():
    """The CUDA path autocasts to bfloat16; CPU autocast exercises the same dtype mix: the losses stay float32,
    close to their float32 values, the steps train, and inference runs (lambda_fg on: every loss term)."""
    torch.manual_seed(0)
    cfg = tiny(lambda_fg=0.5)
    net = MaleniaNet(cfg)
    criterion = MaleniaCriterion(cfg)
    masks = torch.zeros(2, 32, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 8:16, 8:16] = True
    masks[1, 20:26, 18:24, 4:10] = True
    targets = [LesionTargets(masks, [list(range(8)), list(range(8, 16))]),
               LesionTargets(torch.zeros(0, 32, 32, 32, dtype=torch.bool), [])]
    g = torch.Generator().manual_seed(1)
    image, bank, aspects = torch.rand(2, 1, 32, 32, 32, generator=g), torch.randn(16, 8, generator=g), torch.arange(16) % 8
    reference = criterion(net(image, bank, aspects, targets), targets)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(image, bank, aspects, targets)
            parts = criterion(out, targets)
        assert out.mask_logits.dtype == torch.bfloat16  # autocast really ran the network in bfloat16
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in parts.values()), parts
        if not totals:
            torch.testing.assert_close(parts["total"], reference["total"].detach(), rtol=0.05, atol=0.05)
        opt.zero_grad()
        parts["total"].backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        totals.append(parts["total"].item())
    assert totals[-1] < totals[0], totals
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pred = net.predict(image[:1], bank, aspects)[0]
    assert pred.mask_logits.shape == (cfg.num_tokens, 32, 32, 32) and torch.isfinite(pred.mask_logits.float()).all()
    assert torch.isfinite(pred.lesion_score.float()).all()


def test_batched_matching_equals_matching_each_image_and_losses_gather_on_the_device():
    from malenia.model.matcher import HungarianMatcher

    torch.manual_seed(0)
    cfg = tiny(num_tokens=4)
    net = MaleniaNet(cfg)
    masks = torch.zeros(3, 32, 32, 32, dtype=torch.bool)
    for k in range(3):
        masks[k, 8 * k + 2: 8 * k + 8, 6:12, 10:16] = True
    targets = [LesionTargets(masks, [[0], [1], [2]]), LesionTargets(masks[:0], []), LesionTargets(masks[1:2], [[3]])]
    out = net(torch.rand(3, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8, targets)
    matcher = HungarianMatcher(cfg.match_cost_bce, cfg.match_cost_dice)
    for block in out.supervision:
        for i, t in enumerate(targets):
            tok, les = matcher.match(block.logits[i], t.masks.flatten(1).float())
            assert torch.equal(block.matches[i][0], tok) and torch.equal(block.matches[i][1], les)
        pred, gt = block.matched()
        assert len(pred) == 3 + 0 + 1
        expected = torch.cat([block.logits[i, tok] for i, (tok, _) in enumerate(block.matches)])
        assert torch.equal(pred, expected) and torch.equal(gt[-1], masks[1].flatten().float())


def test_sparse_target_bce_is_the_mean_bce_against_the_matched_lesions_and_empty_masks():
    from malenia.model.losses import sparse_target_bce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 50, generator=g) * 8  # beyond softplus' linear threshold too
    gt = (torch.rand(2, 50, generator=g) < 0.3).float()
    img, tok = torch.tensor([0, 2]), torch.tensor([3, 1])
    target = torch.zeros_like(logits)
    target[img, tok] = gt
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(sparse_target_bce(logits, logits[img, tok], gt), expected, rtol=1e-6, atol=1e-6)
    # and nothing matched: every mask learns to be empty
    none = torch.zeros(0, 50)
    torch.testing.assert_close(sparse_target_bce(logits, none, none),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)))
