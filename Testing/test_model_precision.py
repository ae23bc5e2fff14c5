"""The network's arithmetic (malenia.model.precision): what "auto" picks, the channels-last layout, and that
the fast arithmetic computes what float32 does, in training and in the sliding window `segment` runs."""

import numpy as np
import pytest
import torch

from malenia.errors import InputError
from malenia.model.network import MaleniaNet
from malenia.model.precision import cpu_bfloat16_instructions, cpu_capabilities, native_bfloat16, resolve_precision
from model_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_follows_native_support_and_forced_choices_hold():
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    assert auto.bfloat16 == native_bfloat16(cpu)
    assert auto.channels_last  # on CPU the layout oneDNN's convolutions use
    assert resolve_precision("bf16", "cpu").bfloat16 and not resolve_precision("fp32", "cpu").bfloat16
    assert resolve_precision("fp32", "cpu").name == "fp32 channels-last"
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_cuda_lets_cudnn_time_its_algorithms_and_the_cpu_leaves_that_alone(monkeypatch):
    from malenia.model.precision import Precision

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    net = torch.nn.Conv3d(1, 2, 3)
    resolve_precision("auto", "cpu").prepare_model(net)
    assert torch.backends.cudnn.benchmark is False
    Precision("cuda", bfloat16=True, channels_last=False).prepare_model(net)  # a CPU module will do: a flag only
    assert torch.backends.cudnn.benchmark is True and net.weight.is_contiguous()


def test_auto_takes_bfloat16_only_from_cpu_instructions_not_from_onednn_emulation():
    # plain AVX512 (oneDNN emulates bfloat16 there, slower than float32) keeps float32
    plain = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_bf16": False, "amx_bf16": False}
    assert not cpu_bfloat16_instructions(plain) and not cpu_bfloat16_instructions({})
    assert cpu_bfloat16_instructions({**plain, "avx512_bf16": True})
    assert cpu_bfloat16_instructions({**plain, "amx_bf16": True})
    # this machine: "auto" follows its own flags
    assert native_bfloat16(torch.device("cpu")) == cpu_bfloat16_instructions(cpu_capabilities())


def test_channels_last_keeps_values_and_float32_outputs_match_bit_for_bit_closely():
    torch.manual_seed(0)
    cfg = tiny_config(stages=5)
    net = MaleniaNet(cfg).eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, 32, 32, 32, generator=g)
    bank, aspects = torch.randn(16, cfg.text_dim, generator=g), torch.arange(16) % 8
    with torch.no_grad():
        reference = net(image, bank, aspects).foreground()
    fp32 = resolve_precision("fp32", "cpu")
    x = fp32.prepare_input(image)
    assert x.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(x, image)
    fp32.prepare_model(net)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad(), fp32.autocast():
        out = net(x, bank, aspects).foreground()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)  # a layout, not new arithmetic
    bf16 = resolve_precision("bf16", "cpu")
    with torch.no_grad(), bf16.autocast():
        low = net(bf16.prepare_input(image), bank, aspects)
    assert low.mask_logits.dtype == torch.bfloat16  # bfloat16 really ran
    assert (low.foreground().float() - reference).abs().max() < 0.05


def test_window_runner_under_bfloat16_gives_the_float32_probability_and_candidates():
    """The sliding window `segment` runs: same blended probability within bfloat16's precision, float32 out."""
    from malenia.infer.windows import WindowRunner

    torch.manual_seed(0)
    cfg = tiny_config(stages=5)
    net = MaleniaNet(cfg).eval()
    g = torch.Generator().manual_seed(2)
    bank, aspects = torch.randn(16, cfg.text_dim, generator=g), torch.arange(16) % 8
    volume = np.random.default_rng(3).random((40, 36, 44)).astype(np.float32)
    passes = {}
    for name in ("fp32", "bf16"):
        precision = resolve_precision(name, "cpu")
        runner = WindowRunner(precision.prepare_model(net), bank, aspects, (32, 32, 32), torch.device("cpu"),
                              threshold=0.3, token_threshold=0.0, precision=precision)
        passes[name] = runner.run(volume)
    a, b = passes["fp32"].probability, passes["bf16"].probability
    assert b.dtype == np.float32 and b.shape == volume.shape
    assert np.abs(a - b).max() < 0.05
    assert passes["bf16"].windows_run == passes["fp32"].windows_run > 1
    assert all(c.distribution.dtype == np.float32 and np.isfinite(c.distribution).all()
               for c in passes["bf16"].candidates)


def test_channels_last_weights_save_and_load_through_safetensors(tmp_path):
    """safetensors finds the aliased weights nnU-Net's modules register through `view(-1)`, which channels-last
    weights refuse: checkpoints and weight files go through the standard layout, and the model keeps its own."""
    from safetensors.torch import save_model

    from malenia.model.folder import load_weights
    from malenia.model.precision import standard_layout
    from malenia.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_config(stages=5)
    precision = resolve_precision("fp32", "cpu")
    net = precision.prepare_model(MaleniaNet(cfg))
    with pytest.raises(RuntimeError):  # what the trainer hit before the standard layout (an alias is a view)
        save_model(net, str(tmp_path / "raw.safetensors"))
    optimizer = torch.optim.AdamW(net.parameters())
    save_checkpoint(tmp_path, 1, net, optimizer, None)
    with standard_layout(net) as plain:
        save_model(plain, str(tmp_path / "weights.safetensors"))
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)  # back as it was
    assert optimizer.param_groups[0]["params"][0] is next(net.parameters())  # the same parameter objects
    for load in (lambda m: load_weights(m, tmp_path / "weights.safetensors"),
                 lambda m: load_checkpoint(tmp_path / "checkpoints" / "step_00000001", m)):
        other = precision.prepare_model(MaleniaNet(cfg))
        load(other)
        for (k, a), b in zip(net.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), k
        assert next(m for m in other.modules() if isinstance(m, torch.nn.Conv3d)).weight.is_contiguous(
            memory_format=torch.channels_last_3d)


def test_compiled_parts_compute_the_same_and_keep_their_parameter_names():
    """--compile: the fixed-shape parts traced by torch.compile (aot_eager traces forward and backward as inductor
    does, without generating code); outputs, gradients and the state dict's names are the eager network's."""
    from malenia.model.precision import compile_network

    torch.manual_seed(0)
    cfg = tiny_config(stages=5)
    eager, compiled = MaleniaNet(cfg), MaleniaNet(cfg)
    compiled.load_state_dict(eager.state_dict())
    assert compile_network(compiled, "aot_eager") == ["backbone", "decoder", "heads"] + (["dense"] if eager.dense else [])
    assert list(compiled.state_dict()) == list(eager.state_dict())
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 1, 32, 32, 32, generator=g)
    bank, aspects = torch.randn(16, cfg.text_dim, generator=g), torch.arange(16) % 8
    outs = [net(image, bank, aspects).foreground() for net in (eager, compiled)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for out in outs:
        out.square().mean().backward()
    conv = "backbone." + next(n for n, p in eager.backbone.named_parameters() if p.ndim == 5)
    torch.testing.assert_close(compiled.get_parameter(conv).grad, eager.get_parameter(conv).grad, rtol=1e-3, atol=1e-6)
    with pytest.raises(InputError, match="compile backend"):
        compile_network(eager, "tensorrt")
