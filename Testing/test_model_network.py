"""MaleniaNet: shapes for any input size, gradients reach every part, inference API, determinism."""

import pytest
import torch

from malenia.aspects import ASPECTS
from malenia.errors import InputError
from malenia.model.config import MaleniaConfig
from malenia.model.losses import MaleniaCriterion
from malenia.model.network import ImagePrediction, MaleniaNet
from malenia.model.targets import LesionTargets
from model_helpers import tiny_config

N_TOKENS, TEXT_DIM, ROWS = 6, 8, 24  # 3 descriptions per aspect


def tiny(**changes) -> MaleniaConfig:
    return tiny_config(num_tokens=N_TOKENS, text_dim=TEXT_DIM, **changes)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bank():
    g = torch.Generator().manual_seed(7)
    return torch.randn(ROWS, TEXT_DIM, generator=g), torch.arange(ROWS) % len(ASPECTS)


def box_targets(shape, boxes, positives, report_rows=None):
    masks = torch.zeros(len(boxes), *shape, dtype=torch.bool)
    for k, (z, y, x, s) in enumerate(boxes):
        masks[k, z : z + s, y : y + s, x : x + s] = True
    return LesionTargets(masks, positives, report_rows)


@pytest.mark.parametrize("shape", [(64, 64, 64), (64, 32, 96), (37, 50, 29)])
def test_output_shapes_batch_of_two(shape):
    torch.manual_seed(0)
    cfg = tiny()
    net = MaleniaNet(cfg)
    b, a = bank()
    image = torch.rand(2, 1, *shape)
    out = net(image, b, a)
    n, r = cfg.num_tokens, ROWS
    assert out.mask_logits.shape == (2, n, *shape)
    assert out.image_shape == shape
    padded = tuple(max(-(-s // 32), 2) * 32 for s in shape)
    assert out.padded_shape == padded
    assert [tuple(p.shape) for p in out.proposals] == [(2, n, *(s // st for s in padded)) for st in (32, 16, 8)]
    assert all(t.shape == (2, n, cfg.embed_dim) for t in out.tokens)
    assert all(s.shape == (2, n, r + 1) for s in out.sim_logits)
    assert out.lesion_score.shape == (2, n) and ((out.lesion_score >= 0) & (out.lesion_score <= 1)).all()
    assert out.aspect_rows.shape == (2, n, len(ASPECTS))
    # each slot's best row describes that slot's aspect
    assert (a[out.aspect_rows] == torch.arange(len(ASPECTS))).all()
    assert torch.isfinite(out.mask_logits).all()


def test_crop_back_matches_where_the_input_was_padded():
    """A 40³ input equals the corner of a 64³ one that holds it and air elsewhere."""
    torch.manual_seed(0)
    net = MaleniaNet(tiny()).eval()
    b, a = bank()
    small = torch.rand(1, 1, 40, 40, 40)
    big = torch.zeros(1, 1, 64, 64, 64)
    big[..., :40, :40, :40] = small
    out_small = net(small, b, a).mask_logits
    out_big = net(big, b, a).mask_logits[..., :40, :40, :40]
    torch.testing.assert_close(out_small, out_big)


def test_every_parameter_group_gets_a_gradient():
    torch.manual_seed(0)
    cfg = tiny()
    net = MaleniaNet(cfg)
    b, a = bank()
    shape = (64, 48, 64)
    targets = [
        box_targets(shape, [(5, 5, 5, 12), (30, 20, 30, 16)], [list(range(8)), [8, 9, 10, 11, 12, 13, 14, 15, 23]]),
        box_targets(shape, [], []),
    ]
    out = net(torch.rand(2, 1, *shape), b, a, targets)
    losses = MaleniaCriterion(cfg)(out, targets)
    assert set(losses) >= {"deep", "sim", "seg", "total"}
    losses["total"].backward()
    groups = net.parameter_groups()
    assert set(groups) == {"backbone", "transformer_decoder", "text_projection", "cmki", "heads"}
    assert sum(len(v) for v in groups.values()) == len(list(net.parameters()))
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_predict_returns_one_dataclass_per_image():
    torch.manual_seed(0)
    cfg = tiny()
    net = MaleniaNet(cfg).eval()
    b, a = bank()
    preds = net.predict(torch.rand(2, 1, 40, 64, 33), b, a, topk=2)
    assert len(preds) == 2 and all(isinstance(p, ImagePrediction) for p in preds)
    p = preds[0]
    assert p.mask_logits.shape == (cfg.num_tokens, 40, 64, 33)
    assert p.topk_rows.shape == p.topk_scores.shape == (cfg.num_tokens, len(ASPECTS), 2)
    assert torch.equal(p.topk_rows[..., 0], p.aspect_rows)
    assert (p.topk_scores[..., 0] >= p.topk_scores[..., 1]).all()
    assert (a[p.topk_rows] == torch.arange(len(ASPECTS))[:, None]).all()
    assert (p.topk_scores.sum(-1) <= 1 + 1e-5).all()
    # with all of an aspect's rows, the scores are a distribution
    full = net.predict(torch.rand(1, 1, 64, 64, 64), b, a, topk=ROWS // len(ASPECTS))[0]
    torch.testing.assert_close(full.topk_scores.sum(-1), torch.ones(cfg.num_tokens, len(ASPECTS)))


def test_aspect_missing_from_bank_is_reported_as_none():
    torch.manual_seed(0)
    net = MaleniaNet(tiny()).eval()
    b, a = bank()
    keep = a != ASPECTS.index("enhancement")
    p = net.predict(torch.rand(1, 1, 64, 64, 64), b[keep], a[keep])[0]
    slot = ASPECTS.index("enhancement")
    assert (p.aspect_rows[:, slot] == -1).all() and (p.aspect_scores[:, slot] == 0).all()


def test_same_seed_same_result():
    b, a = bank()
    shape = (64, 64, 64)
    targets = [box_targets(shape, [(8, 8, 8, 14)], [list(range(8))])]
    results = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        cfg = tiny(num_points=2000)  # point sampling draws from the global generator too
        net = MaleniaNet(cfg)
        image = torch.rand(1, 1, *shape)
        out = net(image, b, a, targets)
        loss = MaleniaCriterion(cfg)(out, targets)["total"]
        results.append((out.mask_logits.detach(), loss.detach()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][0], results[2][0])


@pytest.mark.parametrize(
    "changes",
    [
        dict(multi_scale_alignment=False),
        dict(multi_positive=False),
        dict(use_cmki=False),
        dict(branches="mask"),
        dict(branches="text"),
        dict(masked_attention=False),
        dict(num_points=500),
    ],
)
def test_ablation_switches_train(changes):
    torch.manual_seed(0)
    cfg = tiny(**changes)
    net = MaleniaNet(cfg)
    b, a = bank()
    a = a.clone()
    a[-2:] = -1  # two whole-report rows for the single-positive ablation
    shape = (64, 64, 64)
    targets = [box_targets(shape, [(8, 8, 8, 14), (40, 40, 40, 10)], [list(range(8)), list(range(8, 16))], [22, 23])]
    out = net(torch.rand(1, 1, *shape), b, a, targets)
    loss = MaleniaCriterion(cfg)(out, targets)["total"]
    loss.backward()
    assert torch.isfinite(loss)
    # no dead weights in any variant (DistributedDataParallel would refuse them)
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"
    if not cfg.multi_positive:  # every slot draws from the report rows
        pred = net.predict(torch.rand(1, 1, *shape), b, a)[0]
        assert set(pred.aspect_rows.flatten().tolist()) <= {22, 23}


def test_bad_inputs_are_refused_with_clear_errors():
    net = MaleniaNet(tiny())
    b, a = bank()
    image = torch.rand(1, 1, 64, 64, 64)
    with pytest.raises(InputError, match="text-encoder"):
        net(image, torch.randn(ROWS, TEXT_DIM + 1), a)
    with pytest.raises(InputError, match=r"\[B, 1, D, H, W\]"):
        net(torch.rand(1, 64, 64, 64), b, a)
    with pytest.raises(InputError, match="do not match image"):
        net(image, b, a, [box_targets((32, 32, 32), [(0, 0, 0, 4)], [[0]])])
    with pytest.raises(InputError, match="rows must be in"):
        net(image, b, a, [box_targets((64, 64, 64), [(0, 0, 0, 4)], [[ROWS]])])
    with pytest.raises(InputError, match="report_rows"):
        MaleniaNet(tiny(multi_positive=False))(image, b, a, [box_targets((64, 64, 64), [(0, 0, 0, 4)], [[0]])])
    with pytest.raises(InputError, match="positives for"):
        LesionTargets(torch.zeros(2, 4, 4, 4, dtype=torch.bool), [[0]])


def test_input_windows_show_what_the_soft_tissue_window_hides_and_widen_a_network_without_changing_it(tmp_path):
    """The stem cuts each HU window from the one preprocessed channel exactly as preprocessing with that window
    would; a network widened onto a parent's weights (the new channel's first-convolution weights zero) gives the
    parent's outputs, and the lung channel then changes them once its weights move."""
    import numpy as np
    from safetensors.torch import save_model

    from malenia.data.preprocess import preprocessor_for
    from malenia.model.folder import FIRST_CONV, load_weights
    from malenia.model.stem import WindowStem

    torch.manual_seed(0)
    soft = tiny()
    lo, hi = soft.hu_window
    wide = soft.replace(hu_window=(-1000.0, hi), input_windows=[[lo, hi], [-1000, lo]])  # lists, as --set gives
    assert wide.input_windows == ((lo, hi), (-1000.0, lo)) and MaleniaConfig.from_dict(wide.to_dict()) == wide
    hu = np.linspace(-1100, 600, 24 * 24 * 24, dtype=np.float32).reshape(24, 24, 24)
    channels = WindowStem(wide)(torch.from_numpy(preprocessor_for(wide).normalize(hu))[None, None])
    for c, window in enumerate(wide.input_windows):
        expected = preprocessor_for(soft.replace(hu_window=window)).normalize(hu)
        assert np.abs(channels[0, c].numpy() - expected).max() < 1e-5
    nodule = (hu > -600) & (hu < lo)  # a ground-glass value: flat in the soft-tissue window, graded in the lung one
    assert channels[0, 0].numpy()[nodule].max() == 0 and np.ptp(channels[0, 1].numpy()[nodule]) > 0.4

    parent, child = MaleniaNet(soft).eval(), MaleniaNet(wide).eval()
    save_model(parent, str(tmp_path / "w.safetensors"))
    load_weights(child, tmp_path / "w.safetensors", widen_from=soft)
    assert child.state_dict()[FIRST_CONV].shape[1] == 2 and not child.state_dict()[FIRST_CONV][:, 1].any()
    b, a = bank()
    ct = np.random.default_rng(0).uniform(-1100, 600, (64, 64, 64)).astype(np.float32)
    x_soft, x_wide = (torch.from_numpy(preprocessor_for(c).normalize(ct))[None, None] for c in (soft, wide))
    with torch.no_grad():
        same = (parent(x_soft, b, a).mask_logits - child(x_wide, b, a).mask_logits).abs().max()
        child.state_dict()[FIRST_CONV][:, 1].normal_(0, 0.1)
        moved = (parent(x_soft, b, a).mask_logits - child(x_wide, b, a).mask_logits).abs().max()
    assert same < 1e-3 < moved


@pytest.mark.parametrize("changes, message", [
    (dict(input_windows=((-1000.0, -200.0),)), "inside hu_window"),  # below the preprocessed range: nothing to cut
    (dict(hu_window=(-1000.0, 400.0), input_windows=((-200.0, 400.0), (-500.0, -600.0))), "inside hu_window"),
    (dict(hu_window=(-1000.0, 400.0), input_windows=((-200.0, 400.0),), in_channels=2), "in_channels 1"),
    (dict(hu_window=(-1000.0, 400.0), input_windows=(-200.0, 400.0)), "pairs inside hu_window"),  # one flat pair
])
def test_input_windows_outside_the_preprocessed_range_are_refused(changes, message):
    from malenia.errors import ModelError

    with pytest.raises(ModelError, match=message):
        tiny(**changes)
    wide = tiny(hu_window=(-1000.0, 400.0), input_windows=((-200.0, 400.0), (-1000.0, -200.0)))
    assert wide.loads_weights_of(tiny()) and not tiny().loads_weights_of(wide)  # channels may be added, not dropped


def test_training_slot_weights_take_each_matched_lesion_s_rows_per_aspect_and_t0_elsewhere():
    """CMKI's training slots: a matched token's slot of aspect a spreads its weight evenly over its lesion's bank rows
    of that aspect; a slot without such a row, and every slot of an unmatched token, is t0 (column 0)."""
    from malenia.model.cmki import training_slot_weights
    from malenia.model.targets import LesionTargets

    bank_aspects = torch.tensor([0, 0, 1, 2, 2, 2])  # rows 0-1 aspect 0, row 2 aspect 1, rows 3-5 aspect 2
    masks = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    targets = [LesionTargets(masks, [[0, 3, 5], [2]]), LesionTargets(masks[:1], [[1]])]
    matches = [(torch.tensor([2, 0]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    w = training_slot_weights(matches, targets, bank_aspects, num_tokens=3, multi_positive=True)
    assert w.shape == (2, 3, 8, 7) and w.dtype == torch.float32
    expected = torch.zeros(2, 3, 8, 7)
    expected[..., 0] = 1.0
    expected[0, 2, 0] = torch.tensor([0, 1, 0, 0, 0, 0, 0.0])  # image 0, token 2 <- lesion 0: aspect 0 row 0
    expected[0, 2, 2] = torch.tensor([0, 0, 0, 0, 0.5, 0, 0.5])  # aspect 2: rows 3 and 5, half each
    expected[0, 0, 1] = torch.tensor([0, 0, 0, 1, 0, 0, 0.0])  # token 0 <- lesion 1: aspect 1 row 2
    expected[1, 1, 0] = torch.tensor([0, 0, 1, 0, 0, 0, 0.0])  # image 1, token 1 <- lesion 0: aspect 0 row 1
    assert torch.equal(w, expected)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 8))  # every slot a distribution over [t0, bank]


def test_token_masks_in_the_channels_last_layout_give_the_einsum_s_values_and_gradients():
    """The mask product on channels-last keys runs on their [B, P, C] view: same values and gradients as the einsum,
    and a channels-last result (so the ensemble's convolutions need no conversion); other layouts take the einsum."""
    from malenia.model.layers import token_masks

    torch.manual_seed(0)
    q = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    base = torch.randn(2, 7, 3, 4, 6, dtype=torch.float64)
    for layout in (torch.channels_last_3d, torch.contiguous_format):
        k = base.clone().contiguous(memory_format=layout).requires_grad_(True)
        ref_k = base.clone().requires_grad_(True)
        out = token_masks(q, k)
        ref = torch.einsum("bnc,bczyx->bnzyx", q, ref_k)
        assert out.shape == (2, 5, 3, 4, 6) and torch.allclose(out, ref)
        assert out.is_contiguous(memory_format=layout)
        g = torch.randn_like(ref)
        (gq, gk), (rq, rk) = (torch.autograd.grad(o, (q, kk), g) for o, kk in ((out, k), (ref, ref_k)))
        assert torch.allclose(gq, rq) and torch.allclose(gk, rk)


def test_attention_layer_gives_multihead_attention_s_values_and_gradients_with_and_without_autocast():
    """multi_head_attention computes nn.MultiheadAttention's forward with its own parameters: same outputs and
    parameter gradients in float64 for cross- and self-attention with a mask (True: may attend; a row of all True
    is unmasked), and close under CPU bfloat16 autocast, where it casts the packed weight once."""
    from malenia.model.layers import multi_head_attention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).double()
    q, kv = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 9, 16, dtype=torch.float64)
    pos = torch.randn(2, 9, 16, dtype=torch.float64)
    allowed = torch.rand(2, 5, 9) > 0.5
    allowed[0, 1] = True
    allowed[:, :, 0] = True  # every query sees a key
    cases = [(q, kv + pos, kv, allowed), (q, q, q, None)]
    for qq, k, v, mask in cases:
        ref = mha(qq, k, v, attn_mask=None if mask is None else ~mask.repeat_interleave(4, 0), need_weights=False)[0]
        out = multi_head_attention(mha, qq, k, v, mask)
        assert torch.allclose(out, ref, atol=1e-12)
        g = torch.randn_like(ref)
        params = [mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight]
        for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
            assert torch.allclose(a, b, atol=1e-12)
    mha32 = mha.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = multi_head_attention(mha32, q.float(), (kv + pos).float(), kv.float(), allowed)
    ref = mha32(q.float(), (kv + pos).float(), kv.float(), attn_mask=~allowed.repeat_interleave(4, 0), need_weights=False)[0]
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.05


def test_rank_slots_ranks_each_slot_among_its_aspect_s_rows_only():
    """The masked softmax over all slots at once gives, per slot, the top rows of its own aspect and their
    probabilities among those rows alone; -1 and 0 past the rows an aspect has (here aspect 7 has one row,
    aspect 6 none) and past a bank smaller than k."""
    from malenia.model.attributes import rank_slots

    torch.manual_seed(1)
    aspects = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 7, 0, 5])
    sim = torch.randn(2, 3, len(aspects) + 1)
    rows, scores = rank_slots(sim, aspects, 3)
    assert rows.shape == scores.shape == (2, 3, 8, 3)
    for slot in range(8):
        cols = (aspects == slot).nonzero().flatten()
        p = sim[..., 1:][..., cols].softmax(-1)
        top = p.topk(min(3, len(cols)), dim=-1)
        n = len(cols)
        assert torch.equal(rows[..., slot, :n], cols[top.indices])
        assert torch.allclose(scores[..., slot, :n], top.values)
        assert (rows[..., slot, n:] == -1).all() and (scores[..., slot, n:] == 0).all()
    rows, scores = rank_slots(sim[..., :3], aspects[:2], 3)  # two bank rows, k = 3
    assert rows.shape == (2, 3, 8, 3) and (rows[..., 2:, :] == -1).all() and (rows[..., :2, 1:] == -1).all()
    single, _ = rank_slots(sim, torch.full((len(aspects),), -1), 2, multi_positive=False)
    assert (single == single[..., :1, :]).all() and (single >= 0).all()  # every slot ranks the report rows


def test_a_training_forward_and_its_losses_read_nothing_back_from_the_device():
    """No operator that makes a GPU wait for the host's read-back (nonzero, item, boolean indexing) in a
    training forward and its losses, after the aspects were checked once; the matching's one copy of its costs to
    the host is a device transfer, not among these. The same aspects tensor changed in place is checked again."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"nonzero", "_local_scalar_dense", "masked_select", "is_nonzero", "item", "_unique2", "unique_dim"}

    class Record(TorchDispatchMode):
        seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split("::")[-1]
            if name in syncing:
                self.seen.append(name)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    cfg = tiny()
    net = MaleniaNet(cfg)
    b, a = bank()
    shape = (32, 32, 32)
    targets = [box_targets(shape, [(5, 5, 5, 8)], [list(range(8))]), box_targets(shape, [], [])]
    image = torch.rand(2, 1, *shape)
    net(image, b, a, targets)  # the first call checks the aspects' values
    with Record() as rec:
        MaleniaCriterion(cfg)(net(image, b, a, targets), targets)["total"]
    assert rec.seen == []
    a[0] = 99
    with pytest.raises(InputError, match="must index"):
        net(image, b, a, targets)


def test_the_position_encoding_is_made_once_per_shape_and_is_an_ordinary_tensor():
    """Cached: the same tensor for the same shape, a different one for another; made first under inference mode
    (as segment does) it can still enter a training graph."""
    from malenia.model.layers import sine_position_3d

    with torch.inference_mode():
        first = sine_position_3d((3, 4, 5), 12, torch.device("cpu"))
    assert sine_position_3d((3, 4, 5), 12, torch.device("cpu")) is first
    assert sine_position_3d((3, 4, 6), 12, torch.device("cpu")).shape == (72, 12)
    assert not first.is_inference() and not first.requires_grad
    w = torch.ones(12, requires_grad=True)
    (first * w).sum().backward()
    assert torch.allclose(w.grad, first.sum(0))
