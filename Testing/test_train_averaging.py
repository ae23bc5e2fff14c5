"""`malenia train --ema` (the shipped weights are an average of the steps') and `--freeze` (parts left untrained)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import make_tiny_dataset, train_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("avg")
    make_tiny_dataset(root / "ds")
    return root


def _train(tiny: Path, out: str, **kw):
    return train_tiny(tiny, out, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "weights.safetensors"))


def test_the_model_folder_holds_the_average_of_the_steps_weights(tiny):
    decay = 0.8
    _train(tiny, "ema", ema=decay)
    ckpts = tiny / "ema" / "checkpoints"
    raw2, raw3 = _weights(ckpts / "step_00000002"), _weights(ckpts / "step_00000003")
    average2 = load_file(str(ckpts / "step_00000002" / "average.safetensors"))
    shipped = _weights(tiny / "ema" / "model")
    moved = 0
    for key, w3 in raw3.items():
        if not w3.is_floating_point():
            continue
        expected = decay * average2[f"module.{key}"] + (1 - decay) * w3
        assert torch.allclose(shipped[key], expected, atol=1e-6), key
        moved += int(not torch.equal(raw2[key], w3))
    assert moved > 10  # the steps changed the weights, so the average is not the last step's weights
    assert any(not torch.equal(shipped[k], raw3[k]) for k in raw3)
    manifest = json.loads((tiny / "ema" / "model" / "manifest.json").read_text())
    assert manifest["training"]["ema"] == decay


def test_a_run_with_an_average_resumes_to_the_same_average(tiny):
    _train(tiny, "ema_full", ema=0.9, steps=4)
    run = tiny / "ema_cut"
    _train(tiny, "ema_cut", ema=0.9, steps=4)
    # as if killed after step 3: the newest checkpoint and the model folder gone
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"step": 3, "path": "step_00000003"}))
    for f in (run / "checkpoints" / "step_00000004").iterdir():
        f.unlink()
    (run / "checkpoints" / "step_00000004").rmdir()
    result = _train(tiny, "ema_cut", ema=0.9, steps=4)
    assert result.resumed_from == 3
    full, resumed = _weights(tiny / "ema_full" / "model"), _weights(run / "model")
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-6, rtol=1e-5), key
    from malenia.errors import InputError

    with pytest.raises(InputError, match=r"--ema 0\.9 \(now none\)"):
        _train(tiny, "ema_cut", steps=5)  # the same run without the average would lose it


def test_a_frozen_encoder_keeps_its_parents_weights_and_the_rest_trains(tiny):
    _train(tiny, "parent", steps=2)
    _train(tiny, "child", steps=2, init=tiny / "parent" / "model", freeze=("backbone.encoder.",))
    parent, child = _weights(tiny / "parent" / "model"), _weights(tiny / "child" / "model")
    # the file keeps a shared tensor under one of its names: the encoder's may be stored as the decoder's reference
    encoder = [k for k in parent if k.startswith(("backbone.encoder.", "backbone.decoder.encoder."))]
    assert encoder and all(torch.equal(parent[k], child[k]) for k in encoder)
    assert any(not torch.equal(parent[k], child[k]) for k in parent if k.startswith("backbone.decoder.stages."))
    manifest = json.loads((tiny / "child" / "model" / "manifest.json").read_text())
    assert manifest["training"]["frozen"]["prefixes"] == ["backbone.encoder."]
    assert 0 < manifest["training"]["frozen"]["parameters"] < sum(v.numel() for v in parent.values())


@pytest.mark.parametrize("kw, message", [({"ema": 1.0}, "between 0 and 1"), ({"freeze": ("encoder.",)}, "names no parameter")])
def test_a_bad_average_or_frozen_part_is_refused_before_training(tiny, kw, message):
    from malenia.errors import InputError

    with pytest.raises(InputError, match=message):
        _train(tiny, "bad", **kw)
    assert not (tiny / "bad").exists()
