"""A short optimisation on a synthetic volume with two blobs: the loss falls and the masks find the blobs."""

import torch
from model_helpers import tiny_config

from malenia.model.losses import MaleniaCriterion
from malenia.model.network import MaleniaNet
from malenia.model.targets import LesionTargets


def matched_dsc(net, image, bank, aspects, targets) -> float:
    """Mean hard DSC of the final masks of the tokens matched (last block) to the blobs."""
    with torch.no_grad():
        out = net(image, bank, aspects, targets)
    tok, les = out.supervision[-1].matches[0]
    pred = out.mask_logits[0, tok] > 0
    gt = targets[0].masks[les]
    return (2 * (pred & gt).sum((1, 2, 3)) / (pred.sum((1, 2, 3)) + gt.sum((1, 2, 3)))).mean().item()


def test_fifty_steps_lower_the_loss_and_find_the_blobs():
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = tiny_config(stages=5, num_tokens=6)
        net, criterion = MaleniaNet(cfg), MaleniaCriterion(cfg)
        s = 32
        zz, yy, xx = torch.meshgrid(*(torch.arange(s, dtype=torch.float32),) * 3, indexing="ij")
        masks = torch.stack(
            [(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 12) ** 2 <= 25, (zz - 21) ** 2 + (yy - 22) ** 2 + (xx - 19) ** 2 <= 36]
        )
        g = torch.Generator().manual_seed(1)
        image = 0.3 + 0.05 * torch.randn(1, 1, s, s, s, generator=g)
        image[0, 0][masks[0]] += 0.4
        image[0, 0][masks[1]] += 0.25
        bank, aspects = torch.randn(16, 8, generator=g), torch.arange(16) % 8
        targets = [LesionTargets(masks, [list(range(8)), list(range(8, 16))])]

        dsc_before = matched_dsc(net, image, bank, aspects, targets)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-5)
        losses = []
        for _ in range(50):
            loss = criterion(net(image, bank, aspects, targets), targets)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        dsc_after = matched_dsc(net, image, bank, aspects, targets)
    finally:
        torch.set_num_threads(old_threads)

    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    assert dsc_before < 0.3 and dsc_after > 0.5, (dsc_before, dsc_after)
