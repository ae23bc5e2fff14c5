"""Model configurations: paper/compact as data, JSON round trip, clear errors."""

import json

import pytest

from malenia.errors import InputError, ModelError
from malenia.model.config import MaleniaConfig, OptimConfig, compact, get_config, paper


def test_paper_and_compact_share_the_architecture():
    p, c = paper(), compact()
    assert p.stride == c.stride == 32
    assert p.block_strides == c.block_strides == (32, 16, 8)
    assert len(p.features_per_stage) == len(c.features_per_stage) == 6
    assert p.num_tokens == c.num_tokens == 16 and p.num_blocks == c.num_blocks == 3
    assert sum(c.features_per_stage) < sum(p.features_per_stage)
    assert p.patch_size == (96, 96, 96) and p.optim.batch_size == 2
    assert (p.optim.lr, p.optim.weight_decay) == (1e-4, 1e-5)
    assert (p.lambda_deep, p.lambda_sim, p.lambda_seg, p.alpha_bce, p.alpha_dice) == (1, 1, 1, 2, 2)
    assert min(c.target_spacing) > max(p.target_spacing)  # compact works at a coarser spacing


@pytest.mark.parametrize("name", ["paper", "compact"])
def test_json_round_trip(name):
    cfg = get_config(name).replace(multi_positive=False, branches="mask", num_points=1000)
    back = MaleniaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert isinstance(back.optim, OptimConfig) and isinstance(back.patch_size, tuple)


def test_unknown_name_and_keys_are_refused():
    with pytest.raises(InputError, match="unknown model config"):
        get_config("huge")
    with pytest.raises(ModelError, match="unknown keys"):
        MaleniaConfig.from_dict({**paper().to_dict(), "colour": "blue"})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(branches="audio"), "branches"),
        (dict(patch_size=(96, 96, 80)), "multiple of the network stride"),
        (dict(embed_dim=100, num_heads=8), "divisible"),
        (dict(strides=(2, 2, 2, 2, 2, 2)), "full resolution"),
        (dict(hu_window=(400.0, -200.0)), "hu_window"),
    ],
)
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ModelError, match=message):
        paper().replace(**change)


def test_architecture_ignores_training_only_fields():
    c = compact()
    assert c.replace(lambda_fg=0.0, alpha_bce=1.0, name="other").architecture() == c.architecture()
    assert c.replace(num_tokens=8).architecture() != c.architecture()
    assert c.replace(multi_positive=False).architecture() != c.architecture()  # inference ranks rows by it
