"""Training: a short run learns and leaves a loadable model; checkpoints resume exactly; DDP matches one process."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from train_helpers import make_tiny_dataset, tiny_config

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _cli(*args, **kw):
    return subprocess.run([PY, "-m", "malenia.cli", *map(str, args)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=kw.get("timeout", 900))  # generous: a loaded 2-core machine imports slowly


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_dataset(root / "ds")
    make_tiny_dataset(root / "ds1", max_lesions=1)  # one lesion per case: per-sample losses normalise alike
    cfg_path = root / "tiny.json"
    cfg_path.write_text(json.dumps(tiny_config().to_dict()))
    return root


@pytest.fixture(scope="module")
def trained(tiny):
    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    run = tiny / "run30"
    result = train(TrainOptions(data=tiny / "ds", out=run, config=tiny_config(), steps=30, checkpoint_every=10,
                                val_every=15, log_every=1, progress="none", seed=0))
    return run, result


def test_30_steps_lower_the_loss_and_write_a_loadable_model(trained, tiny):
    from malenia.evaluate.evaluate import evaluate_dataset
    from malenia.model.folder import load_model_folder
    from malenia.train.checkpoint import latest_checkpoint

    run, result = trained
    assert result.steps == 30 and len(result.losses) == 30
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 31))
    assert any("val_dsc" in r for r in rows)
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == "step_00000030"
    assert len(list((run / "checkpoints").glob("step_*"))) == 2  # keeps the newest two
    # The model folder holds the checkpoint's weights; evaluate loads it and scores the test split.
    model = load_model_folder(run / "model")
    from safetensors.torch import load_file

    final = load_file(str(ckpt / "weights.safetensors"))
    sd = model.network.state_dict()
    assert all(torch.equal(final[k], sd[k]) for k in final)
    result_eval = evaluate_dataset(run / "model", tiny / "ds", "test")
    assert result_eval["data"]["cases"] == 1
    case = result_eval["cases"][0]
    assert 0.0 <= case["dsc"] <= 1.0 and 0.0 <= case["nsd"] <= 1.0
    assert result_eval["model"]["sha256"] == model.sha256


def test_checkpoint_restores_optimizer_scheduler_step_and_rng_exactly(tmp_path):
    from malenia.model.losses import MaleniaCriterion
    from malenia.model.network import MaleniaNet
    from malenia.model.targets import LesionTargets
    from malenia.train.checkpoint import load_checkpoint, save_checkpoint
    from malenia.train.schedule import build_optimizer, build_scheduler

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = tiny_config()

    def setup():
        net = MaleniaNet(cfg)
        opt = build_optimizer(net.parameters(), 1e-3, 1e-5)
        return net, opt, build_scheduler(opt, 20, 4)

    net, opt, sched = setup()
    bank, aspects = torch.randn(16, cfg.text_dim), torch.arange(16) % 8
    mask = torch.zeros(1, 32, 32, 32, dtype=torch.bool)
    mask[0, 10:16, 10:16, 10:16] = True
    targets = [LesionTargets(mask, [list(range(8))])]
    crit = MaleniaCriterion(cfg)
    for _ in range(3):
        loss = crit(net(torch.randn(1, 1, 32, 32, 32), bank, aspects, targets), targets)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    save_checkpoint(tmp_path, 3, net, opt, sched, {"note": "x"})
    expected_rand = torch.rand(5)
    expected_np = np.random.rand(3)

    net2, opt2, sched2 = setup()
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000003", net2, opt2, sched2)
    assert state.step == 3 and state.extra == {"note": "x"}
    assert sched2.state_dict() == sched.state_dict()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for pid in s1:
        for name in s1[pid]:
            assert torch.equal(torch.as_tensor(s1[pid][name]), torch.as_tensor(s2[pid][name])), (pid, name)
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(torch.rand(5), expected_rand)
    assert np.array_equal(np.random.rand(3), expected_np)


def test_killed_run_resumes_on_the_same_trajectory(tiny):
    """A run killed after its step-6 checkpoint, resumed by the same command, matches an uninterrupted run.
    float32 (in the channels-last layout the CPU uses): bfloat16 CPU kernels are not bitwise deterministic,
    so only float32 can be compared to 1e-5."""
    common = ["--config", tiny / "tiny.json", "--data", tiny / "ds", "--steps", 12, "--checkpoint-every", 6,
              "--log-every", 1, "--val-split", "none", "--threads", 1, "--progress", "json", "--precision", "fp32"]
    full = _cli("train", "--out", tiny / "full", *common)
    assert full.returncode == 0, full.stderr[-2000:]

    run = tiny / "killed"
    proc = subprocess.Popen([PY, "-m", "malenia.cli", "train", "--out", str(run), *map(str, common)], cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.time() + 600
    while time.time() < deadline and not pointer.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(pointer.read_text())["step"] == 6
    assert not (run / "model").exists()
    resumed = _cli("train", "--out", run, *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first = json.loads(resumed.stdout.splitlines()[0])
    assert first["step"] == 6 and first["message"] == "resuming"

    def losses(folder):
        out = {}
        for line in (folder / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "loss" in row:
                out[row["step"]] = row["loss"]
        return out

    a, b = losses(tiny / "full"), losses(run)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))  # each step once: the killed launch's lines after step 6 dropped
    for step in range(7, 13):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step


def test_ddp_two_processes_match_one_process(tiny):
    """torchrun with 2 gloo processes x batch 1 follows the single-process batch-2 loss trajectory."""
    common = ["--config", tiny / "tiny.json", "--data", tiny / "ds1", "--steps", 4, "--log-every", 1,
              "--val-split", "none", "--threads", 1, "--progress", "none", "--checkpoint-every", 100,
              "--precision", "fp32"]  # compared to 2e-3: float32, as the resume test
    one = _cli("train", "--out", tiny / "one", "--batch-size", 2, *common)
    assert one.returncode == 0, one.stderr[-2000:]
    ddp = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "malenia.cli",
                          "train", "--out", str(tiny / "two"), "--batch-size", "1", *map(str, common)],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    def losses(folder):
        return [json.loads(x)["loss"] for x in (folder / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]

    a, b = losses(tiny / "one"), losses(tiny / "two")
    assert len(a) == len(b) == 4
    assert a[0] != a[-1]  # it trained
    np.testing.assert_allclose(b, a, rtol=2e-3)
    manifest = json.loads((tiny / "two" / "model" / "manifest.json").read_text())
    assert manifest["training"]["batch_size"] == 2


def test_dense_stage_trains_backbone_and_head_only_and_a_full_stage_continues_it(tiny):
    """train_stage "dense" (docs/training.md): no token loss is computed and the token parts keep their
    initial weights; a full run then starts from its model folder (--init) with the paper's terms added."""
    from safetensors.torch import load_file

    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    common = dict(data=tiny / "ds", checkpoint_every=3, val_every=3, log_every=1, progress="none", seed=0)
    stage1, stage2 = tiny / "dense_stage", tiny / "full_after_dense_stage"
    train(TrainOptions(out=stage1, config=tiny_config().replace(train_stage="dense"), steps=6, **common))
    rows = [json.loads(line) for line in (stage1 / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert len(losses) == 6 and all(set(r) >= {"dense"} and "sim" not in r for r in losses)
    assert any("val_dsc" in r for r in rows)
    early = load_file(str(stage1 / "checkpoints" / "step_00000003" / "weights.safetensors"))
    final = load_file(str(stage1 / "model" / "weights.safetensors"))
    changed = {k for k in final if not torch.equal(early[k], final[k])}
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("dense.") for k in changed)
    assert not any(k.startswith(("decoder.", "heads.", "cmki.", "text.")) for k in changed)

    train(TrainOptions(out=stage2, config=tiny_config().replace(foreground_source="mean"),
                       init=stage1 / "model", steps=2, **common))
    rows = [json.loads(line) for line in (stage2 / "metrics.jsonl").read_text().splitlines()]
    assert all("sim" in r and "dense" in r for r in rows if "loss" in r)
    config = json.loads((stage2 / "model" / "config.json").read_text())
    assert config["foreground_source"] == "mean" and config["train_stage"] == "full"


def test_a_fine_tune_may_move_to_another_grid_but_not_to_another_network(tiny, trained):
    """--init loads the parent's weights when only the model grid differs (no weight depends on it) and the
    fine-tune ships on its own grid; a different network (here a patch that changes no weight's shape, and a
    wider embedding that does) is still refused, without leaving a run folder behind."""
    from safetensors.torch import load_file

    from malenia.errors import InputError
    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    parent = trained[1].model_dir
    cfg = tiny_config()
    finer = tuple(s * 0.8 for s in cfg.target_spacing)
    common = dict(data=tiny / "ds", init=parent, steps=1, lr=1e-12, val_every=5, log_every=1, progress="none", seed=0)
    train(TrainOptions(out=tiny / "finer", config=cfg.replace(target_spacing=finer), **common))
    child, mother = (load_file(str(d / "weights.safetensors")) for d in (tiny / "finer" / "model", parent))
    assert set(child) == set(mother)
    assert all(torch.allclose(child[k].float(), mother[k].float(), atol=1e-6) for k in mother)  # loaded, not re-drawn
    shipped = json.loads((tiny / "finer" / "model" / "config.json").read_text())
    assert tuple(shipped["target_spacing"]) == pytest.approx(finer)
    for other, field in ((cfg.replace(patch_size=(64, 64, 64)), "patch_size"),
                         (cfg.replace(target_spacing=finer, embed_dim=cfg.embed_dim * 2), "embed_dim")):
        # the refusal names what differs and the way out (--init's own config is the default)
        with pytest.raises(InputError, match=rf"different architecture .*\({field}\); leave out --config"):
            train(TrainOptions(out=tiny / "refused", config=other, **common))
        assert not (tiny / "refused").exists()  # refused before the first step: no empty run folder left behind


def test_a_fine_tune_may_add_an_input_window_after_its_parents(tiny, trained):
    """--init onto a network that sees a second, lung window: every parent weight loads, the first convolution
    gains zero weights for the new channel (so at step 0 it computes what the parent did), the shipped folder
    records the windows and its network loads; a child whose first window is not the parent's is refused."""
    from safetensors.torch import load_file

    from malenia.errors import InputError
    from malenia.model.folder import load_model_folder
    from malenia.train.loop import TrainOptions, train

    torch.set_num_threads(1)
    parent = trained[1].model_dir
    cfg = tiny_config()
    lo, hi = cfg.hu_window
    wide = cfg.replace(hu_window=(-1000.0, hi), input_windows=((lo, hi), (-1000.0, lo)))
    common = dict(data=tiny / "ds", init=parent, steps=1, lr=1e-12, val_every=5, log_every=1, progress="none", seed=0)
    train(TrainOptions(out=tiny / "wide", config=wide, **common))
    child, mother = (load_file(str(d / "weights.safetensors")) for d in (tiny / "wide" / "model", parent))
    assert set(child) == set(mother)
    (conv,) = [k for k in child if k.endswith("stages.0.0.convs.0.all_modules.0.weight")]  # the file's name for it
    first = child[conv].float()
    assert first.shape[1] == 2 and mother[conv].shape[1] == 1
    assert torch.allclose(first[:, :1], mother[conv].float(), atol=1e-6)
    assert first[:, 1:].abs().max() < 1e-6  # the lung channel starts silent (lr 1e-12)
    assert all(torch.allclose(child[k].float(), mother[k].float(), atol=1e-6) for k in mother if k != conv)
    shipped = load_model_folder(tiny / "wide" / "model")
    assert shipped.config.network_windows == ((lo, hi), (-1000.0, lo)) and shipped.network.stem is not None
    # at a real rate the new channel learns (at new_window_lr_scale) while the parent's channel stays fixed
    fast = wide.replace(optim=dataclasses.replace(wide.optim, new_window_lr_scale=10.0))
    train(TrainOptions(out=tiny / "wide_fast", config=fast, **{**common, "steps": 2, "lr": 1e-3}))
    moved = load_file(str(tiny / "wide_fast" / "model" / "weights.safetensors"))
    assert torch.allclose(moved[conv][:, :1].float(), mother[conv].float(), atol=1e-6)  # (weight decay: ~1e-7)
    assert moved[conv][:, 1:].abs().max() > 1e-3
    assert any(not torch.allclose(moved[k].float(), mother[k].float(), atol=1e-6) for k in mother if k != conv)
    swapped = cfg.replace(hu_window=(-1000.0, hi), input_windows=((-1000.0, lo), (lo, hi)))
    with pytest.raises(InputError, match=r"different architecture .*\(.*input_windows.*\)"):
        train(TrainOptions(out=tiny / "refused_windows", config=swapped, **common))


def test_a_bfloat16_step_with_non_finite_gradients_is_skipped_and_many_in_a_row_are_a_divergence(tiny, monkeypatch):
    """A finite loss whose bfloat16 backward gives NaN gradients leaves the weights as they were (no optimiser
    step; the manifest counts it); the next finite step trains; a run of such steps stops with an error."""
    import malenia.train.loop as loop
    from malenia.errors import InputError
    from malenia.train.data import batch_loader, to_device
    from malenia.train.distributed import init_distributed

    torch.set_num_threads(1)
    opts = loop.TrainOptions(data=tiny / "ds", out=tiny / "skip", config=tiny_config(), steps=5, val_split=None,
                             progress="none", precision="bf16", num_workers=0)
    trainer = loop.Trainer(opts, init_distributed("cpu"))
    trainer.setup()
    trainer.t_start = time.perf_counter()  # as `run` sets it (the schedule reads the elapsed time)
    batches = batch_loader(trainer.stream, 0, 5, trainer.batch, workers=0)
    name, first = next(iter(trainer.model.named_parameters()))
    poison = first.register_hook(lambda g: torch.full_like(g, float("nan")))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    values = trainer.train_step(*to_device(next(batches), trainer.info.device))
    assert torch.isfinite(values["total"]) and not torch.isfinite(values["grad_norm"])
    assert trainer.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    poison.remove()
    trainer.train_step(*to_device(next(batches), trainer.info.device))
    assert trainer.skipped_steps == 1 and not torch.equal(before[name], first.detach())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    monkeypatch.setattr(loop, "MAX_SKIPPED_IN_A_ROW", 2)
    first.register_hook(lambda g: torch.full_like(g, float("nan")))
    trainer.train_step(*to_device(next(batches), trainer.info.device))
    with pytest.raises(InputError, match="non-finite gradients"):
        trainer.train_step(*to_device(next(batches), trainer.info.device))
