"""`malenia bench model`: figures are produced and consistent; unknown configs get a one-line error."""

import torch

from malenia.cli import main
from malenia.errors import EXIT_BAD_INPUT
from malenia.evaluate.bench_model import measure
from malenia.model.config import MaleniaConfig
from malenia.model.network import MaleniaNet
from model_helpers import tiny_config


def test_measure_tiny_config():
    cfg = tiny_config(patch_size=(32, 32, 32), text_dim=MaleniaConfig.text_dim)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = measure(cfg, repeats=1)
    finally:
        torch.set_num_threads(old)
    p = r["parameters"]
    assert p["total"] == sum(x.numel() for x in MaleniaNet(cfg).parameters())
    assert p["total"] == sum(v for k, v in p.items() if k != "total")
    assert r["text_encoder_included"] is False
    # the first 3x3x3 convolution alone costs 2 * 27 * 4 FLOPs per voxel at 96³
    assert r["flops_forward_96"] > 2 * 27 * 4 * 96**3
    assert r["flops_train_step_patch"] > 0 and r["forward_s"] > 0 and r["train_step_s"] > 0
    assert r["peak_rss_mb"]["after_train_step"] >= r["peak_rss_mb"]["after_model"] > 0


def test_unknown_config_is_a_one_line_error(capsys):
    assert main(["bench", "model", "--config", "enormous"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "unknown model config 'enormous'" in err and "\n" not in err
