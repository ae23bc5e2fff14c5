"""Dense lesion head: shapes per level, prior start, deep-supervised loss by hand, the foreground switch."""

import pytest
import torch
import torch.nn.functional as F

from malenia.errors import ModelError
from malenia.model.dense import PRIOR, deep_supervision_weights, dense_loss, lesion_dice_loss
from malenia.model.losses import MaleniaCriterion
from malenia.model.network import MaleniaNet
from malenia.model.targets import LesionTargets
from model_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dense_cfg(**changes):
    base = dict(num_tokens=3, dense_head_levels=3, lambda_dense=1.0, foreground_source="dense")
    return tiny_config(stages=5, **{**base, **changes})


def cube_targets(shape=(32, 32, 32)):
    masks = torch.zeros(1, *shape, dtype=torch.bool)
    masks[0, 8:14, 8:14, 8:14] = True
    return [LesionTargets(masks, [list(range(8))])]


def test_levels_shapes_and_prior_start():
    torch.manual_seed(0)
    net = MaleniaNet(dense_cfg())
    out = net(torch.rand(1, 1, 30, 32, 27), torch.randn(16, 8), torch.arange(16) % 8)
    shapes = [tuple(x.shape) for x in out.dense_logits]
    # full resolution on the image grid, then 1/2 and 1/4 of the padded 32³ grid
    assert shapes == [(1, 1, 30, 32, 27), (1, 1, 16, 16, 16), (1, 1, 8, 8, 8)]
    # the bias starts every voxel near the lesion prior, not at 0.5
    assert abs(out.foreground().mean().item() - PRIOR) < 0.05
    assert out.foreground().shape == (1, 1, 30, 32, 27)


def test_deep_supervision_weights_halve_and_sum_to_one():
    w = deep_supervision_weights(3)
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_dense_loss_matches_a_hand_computation_and_keeps_small_lesions_at_coarse_levels():
    union = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    union[0, 1, 1, 1] = True  # one voxel: at 1/2 resolution the max-pooled target still marks its cell
    full = torch.zeros(1, 1, 4, 4, 4)
    half = torch.zeros(1, 1, 2, 2, 2)
    loss = dense_loss([full, half], union)

    def term(logits, target):
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        return F.binary_cross_entropy_with_logits(logits, target) + dice

    t_full = union.float()[:, None]
    t_half = torch.zeros(1, 1, 2, 2, 2)
    t_half[0, 0, 0, 0, 0] = 1.0
    expected = 2 / 3 * term(full, t_full) + 1 / 3 * term(half, t_half)
    torch.testing.assert_close(loss, expected)
    # a coarse prediction that marks the cell lowers the loss; one that misses it raises it
    hit, miss = torch.full((1, 1, 2, 2, 2), -5.0), torch.full((1, 1, 2, 2, 2), -5.0)
    hit[0, 0, 0, 0, 0], miss[0, 0, 1, 1, 1] = 5.0, 5.0
    assert dense_loss([full, hit], union) < dense_loss([full, miss], union)


def test_criterion_adds_the_weighted_dense_term_and_it_trains_the_backbone():
    torch.manual_seed(0)
    cfg = dense_cfg(lambda_dense=2.5)
    net = MaleniaNet(cfg)
    targets = cube_targets()
    out = net(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8, targets)
    parts = MaleniaCriterion(cfg)(out, targets)
    rest = cfg.lambda_deep * parts["deep"] + cfg.lambda_sim * parts["sim"] + cfg.lambda_seg * parts["seg"]
    torch.testing.assert_close(parts["total"], rest + cfg.lambda_fg * parts["fg"] + 2.5 * parts["dense"])
    # the dense term alone reaches the encoder's first convolution
    net.zero_grad()
    parts["dense"].backward()
    first = next(net.backbone.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert "dense_head" in net.parameter_groups()


def test_lesion_dice_loss_masks_the_other_lesions_and_weighs_every_lesion_alike():
    torch.manual_seed(0)
    masks = torch.zeros(2, 6, 6, 6, dtype=torch.bool)
    masks[0, :3] = True  # 108 voxels
    masks[1, 5, 5, 5] = True  # one voxel
    logits = torch.randn(1, 1, 6, 6, 6)
    p = logits[0, 0].sigmoid()
    by_hand = []
    for k in range(2):
        pk, t = p * ~masks[1 - k], masks[k].float()
        by_hand.append(1 - (2 * (pk * t).sum() + 1) / (pk.sum() + t.sum() + 1))
    torch.testing.assert_close(lesion_dice_loss(logits, [masks]), torch.stack(by_hand).mean())
    # finding the one-voxel lesion lowers the lesion-wise loss far more than the batch BCE + Dice
    big = torch.where(masks[0], 6.0, -6.0)[None, None]
    both = torch.where(masks.any(0), 6.0, -6.0)[None, None]
    union = masks.any(0)[None]
    lesion_wise = lesion_dice_loss(big, [masks]) - lesion_dice_loss(both, [masks])
    assert lesion_wise > 0.2 and lesion_wise > 5 * (dense_loss([big], union) - dense_loss([both], union))
    # images without lesions add nothing; a batch without any gives a zero that keeps the graph
    none = torch.zeros(0, 6, 6, 6, dtype=torch.bool)
    torch.testing.assert_close(lesion_dice_loss(torch.cat([logits, logits]), [masks, none]), lesion_dice_loss(logits, [masks]))
    assert lesion_dice_loss(logits.requires_grad_(), [none]).requires_grad


def test_criterion_adds_the_lesion_wise_term_when_weighted():
    torch.manual_seed(0)
    net = MaleniaNet(dense_cfg())
    targets = cube_targets()
    out = net(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8, targets)
    plain = MaleniaCriterion(dense_cfg())(out, targets)["dense"]
    weighted = MaleniaCriterion(dense_cfg(dense_lesion_weight=0.5))(out, targets)["dense"]
    expected = plain + 0.5 * lesion_dice_loss(out.dense_logits[0], [t.masks for t in targets])
    torch.testing.assert_close(weighted, expected)
    with pytest.raises(ModelError, match="dense_lesion_weight"):
        dense_cfg(dense_lesion_weight=-1)


def test_foreground_source_switch():
    for source in ("dense", "tokens", "mean"):
        torch.manual_seed(0)
        net = MaleniaNet(dense_cfg(foreground_source=source))
        out = net(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8)
        fg = out.foreground()
        dense = out.dense_logits[0].sigmoid()
        tokens = (out.mask_logits.sigmoid() * out.lesion_score[..., None, None, None]).amax(1, keepdim=True)
        expected = {"dense": dense, "tokens": tokens, "mean": (dense + tokens) / 2}[source]
        torch.testing.assert_close(fg, expected)


def _encoder_grad_of_dense_loss(share: float) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = MaleniaNet(dense_cfg(dense_backbone_grad=share))
    targets = cube_targets()
    out = net(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8), torch.arange(16) % 8, targets)
    MaleniaCriterion(net.cfg)(out, targets)["dense"].backward()
    head = net.dense.convs[0].weight.grad.clone()
    first = next(net.backbone.encoder.parameters())
    return (torch.zeros_like(first) if first.grad is None else first.grad.clone()), head


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_dense_backbone_grad_scales_only_what_reaches_the_backbone(share):
    full_backbone, full_head = _encoder_grad_of_dense_loss(1.0)
    backbone, head = _encoder_grad_of_dense_loss(share)
    assert full_backbone.abs().sum() > 0
    torch.testing.assert_close(head, full_head)  # the head itself learns at full strength
    torch.testing.assert_close(backbone, share * full_backbone)


def test_config_refuses_a_dense_foreground_without_a_head_and_the_paper_has_none():
    with pytest.raises(ModelError, match="dense head"):
        tiny_config(stages=5, foreground_source="dense")
    with pytest.raises(ModelError, match="foreground_source"):
        tiny_config(stages=5, foreground_source="both")
    with pytest.raises(ModelError, match="dense head"):
        tiny_config(stages=5, foreground_source="mean")
    with pytest.raises(ModelError, match="dense_backbone_grad"):
        dense_cfg(dense_backbone_grad=1.5)
    from malenia.model.config import get_config

    paper = get_config("paper")
    assert paper.dense_head_levels == 0 and paper.lambda_dense == 0 and paper.foreground_source == "tokens"


def test_a_fine_tune_may_add_a_dense_head_to_a_parent_without_one(tmp_path):
    from safetensors.torch import save_model

    from malenia.model.folder import load_weights

    parent_cfg = tiny_config(stages=5, num_tokens=3)
    child_cfg = dense_cfg()
    assert child_cfg.adds_dense_head_to(parent_cfg) and not parent_cfg.adds_dense_head_to(child_cfg)
    assert not dense_cfg(embed_dim=32).adds_dense_head_to(parent_cfg)  # another network is not "plus a head"
    torch.manual_seed(0)
    parent = MaleniaNet(parent_cfg)
    path = tmp_path / "weights.safetensors"
    save_model(parent, str(path))
    child = MaleniaNet(child_cfg)
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(child, path)  # strict by default
    load_weights(child, path, new_parts=("dense.",))
    for name, p in parent.state_dict().items():
        torch.testing.assert_close(child.state_dict()[name], p)
    # the new head keeps its prior start; weights of another network are still refused
    assert child.dense.convs[0].bias.item() == pytest.approx(-4.595, abs=1e-3)
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(MaleniaNet(dense_cfg(embed_dim=32)), path, new_parts=("dense.",))


def test_the_dense_head_learns_at_its_own_rate_and_the_rest_at_the_network_rate():
    from malenia.train.schedule import build_optimizer, parameter_groups

    net = MaleniaNet(dense_cfg())
    opt = build_optimizer(parameter_groups(net, 1e-3, 10.0), 1e-3, 0.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-2])
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in net.dense.parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    plain = MaleniaNet(tiny_config(stages=5, num_tokens=3))
    assert len(build_optimizer(parameter_groups(plain, 1e-3, 10.0), 1e-3, 0.0).param_groups) == 1


def test_train_set_reaches_the_optimiser_config_and_refuses_unknown_fields():
    from malenia.commands.train import build_config
    from malenia.errors import InputError

    cfg = build_config("compact", ["optim.dense_head_lr_scale=100", "lambda_dense=2"])
    assert cfg.optim.dense_head_lr_scale == 100 and cfg.lambda_dense == 2
    assert cfg.optim.lr == build_config("compact", []).optim.lr  # the rest of the optimiser is kept
    with pytest.raises(InputError, match="optim.nope"):
        build_config("compact", ["optim.nope=1"])


def test_dense_only_forward_returns_the_same_dense_logits_and_builds_no_tokens():
    torch.manual_seed(0)
    net = MaleniaNet(dense_cfg())
    image = torch.rand(1, 1, 30, 32, 27)
    bank, aspects = torch.randn(16, 8), torch.arange(16) % 8
    full = net(image, bank, aspects)
    calls = []
    net.decoder.register_forward_hook(lambda *a: calls.append("decoder"))
    dense = net(image, bank, aspects, dense_only=True)
    assert calls == []  # the token decoder does not run in the dense stage
    for a, b in zip(dense, full.dense_logits):
        torch.testing.assert_close(a, b)
    targets = [LesionTargets(torch.zeros(1, 30, 32, 27, dtype=torch.bool), [list(range(8))])]
    targets[0].masks[0, 5:9, 5:9, 5:9] = True
    parts = MaleniaCriterion(net.cfg).dense_stage(dense, targets)
    torch.testing.assert_close(parts["dense"], dense_loss(dense, targets[0].masks.any(0)[None]))
    parts["total"].backward()
    assert next(net.backbone.encoder.parameters()).grad.abs().sum() > 0
    assert all(p.grad is None for p in net.decoder.parameters())


def test_dense_stage_needs_a_dense_foreground_and_weights_load_across_foreground_sources():
    with pytest.raises(ModelError, match="train_stage"):
        dense_cfg(train_stage="dense", foreground_source="tokens")
    with pytest.raises(ModelError, match="train_stage"):
        dense_cfg(train_stage="warmup")
    with pytest.raises(ModelError, match="dense_only"):
        MaleniaNet(tiny_config(stages=5, num_tokens=3))(torch.rand(1, 1, 32, 32, 32), torch.randn(16, 8),
                                                       torch.arange(16) % 8, dense_only=True)
    stage1 = dense_cfg(train_stage="dense")
    assert dense_cfg(foreground_source="mean").loads_weights_of(stage1)  # the map read at inference is free
    assert not dense_cfg(dense_head_levels=2).loads_weights_of(stage1)  # a different head is not


def test_validation_reads_the_same_dense_map_without_the_token_path():
    from malenia.train.loop import validate

    torch.manual_seed(0)
    net = MaleniaNet(dense_cfg())
    with torch.no_grad():
        for conv in net.dense.convs:
            conv.bias.fill_(0.0)  # a map that crosses 0.5 somewhere, so the Dice is not trivially 0 or 1
    gt = torch.zeros(32, 32, 32, dtype=torch.bool)
    gt[8:20, 8:20, 8:20] = True
    patches = [(torch.rand(1, 32, 32, 32), gt), (torch.rand(1, 32, 32, 32), gt)]
    bank, aspects = torch.randn(16, 8), torch.arange(16) % 8
    full = validate(net, patches, bank, aspects, "cpu")
    assert 0.0 < full < 1.0
    assert validate(net, patches, bank, aspects, "cpu", dense_only=True) == pytest.approx(full)
